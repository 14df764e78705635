// The KV pool's memory budget read from fake /proc and cgroup files: the smaller of MemAvailable and
// the cgroup's remainder (v2 and v1, "max"/unlimited = no limit, reclaimable page cache not counted
// as used), a per-worker budget less the process's resident memory, and `platform up`'s division of
// the machine among its workers.
using System.Globalization;
using Platform.Cli;

namespace Platform.Engine.Tests;

public sealed class KvMemoryBudgetTests : IDisposable
{
    private const long GiB = 1L << 30;
    private readonly string _root = Directory.CreateTempSubdirectory("kv-budget-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string MemInfo(long availableBytes)
    {
        var path = Path.Combine(_root, "meminfo");
        File.WriteAllText(path, $"MemTotal:       25165824 kB\nMemFree:         1000000 kB\nMemAvailable:   {availableBytes / 1024} kB\nBuffers:          100000 kB\n");
        return path;
    }

    private string Cgroup(params (string File, string Text)[] files)
    {
        var dir = Path.Combine(_root, "cgroup");
        foreach (var (file, text) in files)
        {
            var path = Path.Combine(dir, file);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, text + "\n");
        }

        return dir;
    }

    [Fact]
    public void Without_a_cgroup_limit_the_pool_is_sized_from_MemAvailable()
    {
        var none = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(), () => 0);
        Assert.Null(none.CgroupRemainingBytes());
        Assert.Equal(20 * GiB, none.AvailableBytes());
        Assert.InRange(none.KvPoolBytes(new EngineOptions { KvCacheMemoryFraction = 0.3 }), 6 * GiB - 1024, 6 * GiB + 1024);

        var v2Max = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(("memory.max", "max"), ("memory.current", "123456")), () => 0);
        Assert.Null(v2Max.CgroupRemainingBytes());
        Assert.Equal(20 * GiB, v2Max.AvailableBytes());

        var v1Unlimited = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(("memory/memory.limit_in_bytes", "9223372036854771712"), ("memory/memory.usage_in_bytes", "1000")), () => 0);
        Assert.Null(v1Unlimited.CgroupRemainingBytes());
        Assert.Equal(20 * GiB, v1Unlimited.AvailableBytes());
    }

    [Fact]
    public void A_cgroup_v2_limit_smaller_than_MemAvailable_wins()
    {
        // 8 GiB limit, 3 GiB charged of which 1 GiB is inactive page cache (the weights' files): 6 GiB left.
        var budget = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(
            ("memory.max", (8 * GiB).ToString(CultureInfo.InvariantCulture)),
            ("memory.current", (3 * GiB).ToString(CultureInfo.InvariantCulture)),
            ("memory.stat", $"anon {2 * GiB}\nfile {GiB}\nactive_file 0\ninactive_file {GiB}\n")), () => 0);
        Assert.Equal(6 * GiB, budget.CgroupRemainingBytes());
        Assert.Equal(6 * GiB, budget.AvailableBytes());
        Assert.Equal(3 * GiB, budget.KvPoolBytes(new EngineOptions { KvCacheMemoryFraction = 0.5 }));

        // A limit larger than what the host has free does not raise the figure.
        var roomy = new KvMemoryBudget(MemInfo(2 * GiB), Cgroup(("memory.max", (64 * GiB).ToString(CultureInfo.InvariantCulture)), ("memory.current", "0")), () => 0);
        Assert.Equal(2 * GiB, roomy.AvailableBytes());
    }

    [Fact]
    public void A_cgroup_v1_limit_smaller_than_MemAvailable_wins()
    {
        var budget = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(
            ("memory/memory.limit_in_bytes", (4 * GiB).ToString(CultureInfo.InvariantCulture)),
            ("memory/memory.usage_in_bytes", (2 * GiB).ToString(CultureInfo.InvariantCulture)),
            ("memory/memory.stat", $"cache {GiB}\ntotal_inactive_file {GiB / 2}\n")), () => 0);
        Assert.Equal(4 * GiB - (2 * GiB - GiB / 2), budget.CgroupRemainingBytes());
        Assert.Equal(budget.CgroupRemainingBytes(), budget.AvailableBytes());

        // Usage past the limit (reclaim pending) leaves nothing rather than a negative size.
        var full = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(("memory/memory.limit_in_bytes", GiB.ToString(CultureInfo.InvariantCulture)), ("memory/memory.usage_in_bytes", (2 * GiB).ToString(CultureInfo.InvariantCulture))), () => 0);
        Assert.Equal(0, full.AvailableBytes());
    }

    [Fact]
    public void A_per_worker_budget_counts_what_the_process_already_holds()
    {
        // 6 GiB budget, 1 GiB resident (weights, runtime): 5 GiB left, below the host's 20 GiB.
        var budget = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(), () => GiB);
        Assert.Equal(5 * GiB, budget.AvailableBytes(6 * GiB));
        Assert.InRange(budget.KvPoolBytes(new EngineOptions { KvCacheMemoryFraction = 0.2, MemoryBudgetBytes = 6 * GiB }), GiB - 1024, GiB + 1024);
        // The host's free memory still caps a budget larger than it.
        Assert.Equal(20 * GiB, budget.AvailableBytes(100 * GiB));
        // An explicit pool size wins over every budget.
        Assert.Equal(12345, budget.KvPoolBytes(new EngineOptions { KvCacheBytes = 12345, MemoryBudgetBytes = 6 * GiB }));
        // In whole blocks; an explicit block count wins, and a pool always has one block.
        Assert.Equal(4, budget.PoolBlocks(new EngineOptions { KvCacheBytes = 4500 }, 1000));
        Assert.Equal(7, budget.PoolBlocks(new EngineOptions { KvCacheBytes = 4500, NumKvBlocks = 7 }, 1000));
        Assert.Equal(1, budget.PoolBlocks(new EngineOptions { KvCacheBytes = 10 }, 1000));
        Assert.Throws<ArgumentException>(() => new EngineOptions { MemoryBudgetBytes = 0 }.Validate());
    }

    [Fact]
    public void Unreadable_or_missing_files_fall_back_to_what_the_runtime_knows()
    {
        var nothing = new KvMemoryBudget(Path.Combine(_root, "no-meminfo"), Path.Combine(_root, "no-cgroup"), () => 0);
        Assert.Null(nothing.MemAvailableBytes());
        Assert.Null(nothing.CgroupRemainingBytes());
        Assert.Equal(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, nothing.AvailableBytes());
    }

    [Fact]
    public void Platform_up_divides_the_machine_among_its_workers()
    {
        // 20 GiB free, a 1 GiB store, the router's reserve: three workers of 6 GiB, together within the machine.
        long share = WorkerMemory.PerWorkerBudget(20 * GiB, 3, storeBytes: GiB, hostTierBytesPerWorker: GiB)!.Value;
        Assert.Equal((20 * GiB - WorkerMemory.RouterReserveBytes - GiB) / 3, share);
        Assert.True(3 * share + WorkerMemory.RouterReserveBytes + GiB <= 20 * GiB);
        // One worker gets everything but the reserves.
        Assert.Equal(20 * GiB - WorkerMemory.RouterReserveBytes, WorkerMemory.PerWorkerBudget(20 * GiB, 1, 0, 0));
        // Too many workers for the machine: refused rather than oversubscribed.
        Assert.Null(WorkerMemory.PerWorkerBudget(4 * GiB, 8, storeBytes: GiB, hostTierBytesPerWorker: GiB));

        // Each worker then sizes its pool inside its share, whatever the host reports free.
        var worker = new KvMemoryBudget(MemInfo(20 * GiB), Cgroup(), () => GiB / 2);
        Assert.True(worker.KvPoolBytes(new EngineOptions { KvCacheMemoryFraction = 0.9, MemoryBudgetBytes = share }) < share);
    }
}
