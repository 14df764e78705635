// How many bytes the KV pool may take, from what this process may still allocate: the smaller of
// the host's MemAvailable (/proc/meminfo) and what is left under the container's cgroup memory
// limit (v2 memory.max, v1 memory.limit_in_bytes; "max" or the v1 "unlimited" value = no limit),
// and, when the worker was given one (--memory-budget), what is left of that budget after this
// process's resident memory. Sizing from MemAvailable alone let every worker on a machine take the
// same share of the same free memory: three workers under `platform up` each held 7 GB of 24 GiB.
// Usage under a cgroup counts reclaimable page cache too (the safetensors just read), so the
// inactive file pages are subtracted, as the kubelet does for its working set. The file paths
// and the resident-size probe are injectable so tests feed fake files.
using System.Globalization;

namespace Platform.Engine;

public sealed class KvMemoryBudget
{
    /// <summary>The v1 "no limit" value is PAGE_COUNTER_MAX rounded to a page (9223372036854771712); anything this large is no limit.</summary>
    private const long V1Unlimited = 1L << 60;

    private readonly string _memInfoPath;
    private readonly string _cgroupRoot;
    private readonly Func<long> _residentBytes;

    /// <summary>This machine and process.</summary>
    public static KvMemoryBudget Host { get; } = new();

    public KvMemoryBudget(string memInfoPath = "/proc/meminfo", string cgroupRoot = "/sys/fs/cgroup", Func<long>? residentBytes = null)
    {
        _memInfoPath = memInfoPath;
        _cgroupRoot = cgroupRoot;
        _residentBytes = residentBytes ?? (() => Environment.WorkingSet);
    }

    /// <summary>MemAvailable from /proc/meminfo; null when it cannot be read (not Linux).</summary>
    public long? MemAvailableBytes()
    {
        var line = ReadLines(_memInfoPath)?.FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
        var parts = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return parts is { Length: >= 2 } && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long kib) ? kib * 1024 : null;
    }

    /// <summary>The cgroup memory limit less the cgroup's working set (usage less inactive file pages); null with no limit.</summary>
    public long? CgroupRemainingBytes()
    {
        // cgroup v2: one unified hierarchy mounted at the root.
        if (ReadValue(Path.Combine(_cgroupRoot, "memory.max")) is { } max)
        {
            if (max == "max" || !long.TryParse(max, NumberStyles.None, CultureInfo.InvariantCulture, out long limit)) return null;
            long current = ReadLong(Path.Combine(_cgroupRoot, "memory.current")) ?? 0;
            long inactive = ReadStat(Path.Combine(_cgroupRoot, "memory.stat"), "inactive_file") ?? 0;
            return Math.Max(0, limit - Math.Max(0, current - inactive));
        }

        // cgroup v1: the memory controller has its own directory.
        string v1 = Path.Combine(_cgroupRoot, "memory");
        if (ReadLong(Path.Combine(v1, "memory.limit_in_bytes")) is { } v1Limit && v1Limit < V1Unlimited)
        {
            long usage = ReadLong(Path.Combine(v1, "memory.usage_in_bytes")) ?? 0;
            long inactive = ReadStat(Path.Combine(v1, "memory.stat"), "total_inactive_file") ?? 0;
            return Math.Max(0, v1Limit - Math.Max(0, usage - inactive));
        }

        return null;
    }

    /// <summary>
    /// Bytes this process may still allocate: the smallest of MemAvailable, the cgroup's remainder and, with
    /// <paramref name="budgetBytes"/>, the budget less this process's resident memory. Without /proc (not
    /// Linux) the GC's view of available memory stands in for MemAvailable.
    /// </summary>
    public long AvailableBytes(long? budgetBytes = null)
    {
        long available = MemAvailableBytes() ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (CgroupRemainingBytes() is { } cgroup) available = Math.Min(available, cgroup);
        if (budgetBytes is { } budget) available = Math.Min(available, Math.Max(0, budget - _residentBytes()));
        return available;
    }

    /// <summary>
    /// The KV pool in bytes: <see cref="EngineOptions.KvCacheBytes"/> when set, else
    /// <see cref="EngineOptions.KvCacheMemoryFraction"/> of what is left (<see cref="AvailableBytes"/> with
    /// <see cref="EngineOptions.MemoryBudgetBytes"/>), measured after the weights are loaded.
    /// </summary>
    public long KvPoolBytes(EngineOptions options) =>
        options.KvCacheBytes ?? (long)(AvailableBytes(options.MemoryBudgetBytes) * options.KvCacheMemoryFraction);

    /// <summary>
    /// Blocks of <paramref name="bytesPerBlock"/> the pool gets: <see cref="EngineOptions.NumKvBlocks"/> when set, else
    /// <see cref="KvPoolBytes"/> in whole blocks, at least one, and never more token slots than an int can index.
    /// </summary>
    public int PoolBlocks(EngineOptions options, long bytesPerBlock)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerBlock, 1);
        return options.NumKvBlocks ?? (int)Math.Clamp(KvPoolBytes(options) / bytesPerBlock, 1, int.MaxValue / options.BlockSize);
    }

    private static string[]? ReadLines(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllLines(path) : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string? ReadValue(string path) => ReadLines(path)?.FirstOrDefault()?.Trim();

    private static long? ReadLong(string path) =>
        long.TryParse(ReadValue(path), NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value : null;

    private static long? ReadStat(string path, string key)
    {
        var line = ReadLines(path)?.FirstOrDefault(l => l.StartsWith(key + " ", StringComparison.Ordinal));
        return line is not null && long.TryParse(line[(key.Length + 1)..].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value : null;
    }
}
