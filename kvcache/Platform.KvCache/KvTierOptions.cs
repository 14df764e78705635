// Settings of the KV tier (configuration section Worker:KvTier, switches
// --kv-tier, --kv-host-memory, --redis ...). Validation returns messages that
// name the switch to change; sizes accept "512MB", "4GiB", "1g" or plain bytes.
using System.Globalization;

namespace Platform.KvCache;

public enum KvTierMode
{
    /// <summary>Device pool only (the engine as before).</summary>
    Off,
    /// <summary>Device, then host memory.</summary>
    Host,
    /// <summary>Device, host memory, then the shared Redis-compatible store.</summary>
    Remote,
}

public sealed record KvTierOptions
{
    /// <summary>off | host | remote (remote = host + remote).</summary>
    public string Mode { get; init; } = "remote";
    /// <summary>Host-memory budget ("4GiB", "512MB", bytes).</summary>
    public string HostMemory { get; init; } = "1GiB";
    /// <summary>auto (the engine's KV dtype, lossless) or float16 (half the bytes; lossy for a float32 engine).</summary>
    public string StoreDtype { get; init; } = "auto";
    /// <summary>Blocks waiting to be written to host/remote; more are dropped, never waited for.</summary>
    public int WriteQueueBlocks { get; init; } = 512;
    public RemoteTierOptions Remote { get; init; } = new();

    public KvTierMode ParsedMode => Mode.ToLowerInvariant() switch
    {
        "off" => KvTierMode.Off,
        "host" => KvTierMode.Host,
        "remote" => KvTierMode.Remote,
        _ => throw new ArgumentException(string.Join(" ", Validate())),
    };

    public long HostMemoryBytes => ByteSize.Parse(HostMemory);

    public IEnumerable<string> Validate(string prefix = "Worker:KvTier")
    {
        if (Mode.ToLowerInvariant() is not ("off" or "host" or "remote"))
            yield return $"{prefix}:Mode is '{Mode}'; use --kv-tier off, host or remote (remote = host memory + the shared Redis store).";
        if (!ByteSize.TryParse(HostMemory, out long host) || host < 1)
            yield return $"{prefix}:HostMemory is '{HostMemory}'; set --kv-host-memory to a size such as 512MB or 4GiB.";
        if (StoreDtype.ToLowerInvariant() is not ("auto" or "float16" or "fp16"))
            yield return $"{prefix}:StoreDtype is '{StoreDtype}'; use auto (lossless) or float16.";
        if (WriteQueueBlocks < 1)
            yield return $"{prefix}:WriteQueueBlocks is {WriteQueueBlocks}; set at least 1.";
        if (Mode.Equals("remote", StringComparison.OrdinalIgnoreCase))
            foreach (var e in (Remote ?? new()).Validate(prefix + ":Remote")) yield return e;
    }
}

public sealed record RemoteTierOptions
{
    /// <summary>host:port of a Redis-compatible server, or a StackExchange.Redis configuration string.</summary>
    public string? Address { get; init; }
    public string? User { get; init; }
    public string? Password { get; init; }
    public bool Tls { get; init; }
    /// <summary>Key namespace (the operator gives each model its own, e.g. "lcm:ns:name:").</summary>
    public string KeyPrefix { get; init; } = "kv:";
    /// <summary>Seconds a stored block lives; 0 = no expiry (rely on the server's eviction policy).</summary>
    public int TtlSeconds { get; init; } = 3600;
    /// <summary>Largest value written; bigger blocks stay local.</summary>
    public int MaxValueBytes { get; init; } = 8 << 20;
    /// <summary>Budget of one put batch, and of each block of a prefix fetch (a fetch that stalls this long computes instead).</summary>
    public int OperationTimeoutMs { get; init; } = 500;
    /// <summary>Cap on one whole prefix fetch; what arrived by then is used, the rest computed.</summary>
    public int MaxFetchMs { get; init; } = 5000;
    public int ConnectTimeoutMs { get; init; } = 2000;
    /// <summary>GETs in flight per prefix fetch (pipelining window).</summary>
    public int PipelineDepth { get; init; } = 64;
    /// <summary>Blocks per put batch.</summary>
    public int PutBatchBlocks { get; init; } = 32;
    public double BreakerFailureRatio { get; init; } = 0.5;
    public int BreakerMinimumThroughput { get; init; } = 3;
    public int BreakerSamplingMs { get; init; } = 10_000;
    public int BreakerBreakMs { get; init; } = 5_000;

    public IEnumerable<string> Validate(string prefix)
    {
        if (string.IsNullOrWhiteSpace(Address))
            yield return $"{prefix}:Address is empty; give --redis HOST:PORT, or use --kv-tier host to run without the shared store.";
        if (string.IsNullOrEmpty(KeyPrefix)) yield return $"{prefix}:KeyPrefix is empty; set a namespace such as \"kv:\".";
        if (TtlSeconds < 0) yield return $"{prefix}:TtlSeconds is {TtlSeconds}; set 0 (no expiry) or more.";
        if (MaxValueBytes < 1024) yield return $"{prefix}:MaxValueBytes is {MaxValueBytes}; set at least 1024.";
        if (OperationTimeoutMs < 1) yield return $"{prefix}:OperationTimeoutMs is {OperationTimeoutMs}; set a positive number of milliseconds.";
        if (MaxFetchMs < OperationTimeoutMs) yield return $"{prefix}:MaxFetchMs is {MaxFetchMs}; set at least OperationTimeoutMs ({OperationTimeoutMs}).";
        if (ConnectTimeoutMs < 1) yield return $"{prefix}:ConnectTimeoutMs is {ConnectTimeoutMs}; set a positive number of milliseconds.";
        if (PipelineDepth < 1) yield return $"{prefix}:PipelineDepth is {PipelineDepth}; set at least 1.";
        if (PutBatchBlocks < 1) yield return $"{prefix}:PutBatchBlocks is {PutBatchBlocks}; set at least 1.";
        if (!double.IsFinite(BreakerFailureRatio) || BreakerFailureRatio <= 0 || BreakerFailureRatio > 1)
            yield return $"{prefix}:BreakerFailureRatio is {BreakerFailureRatio}; set a ratio in (0, 1].";
        if (BreakerMinimumThroughput < 2) yield return $"{prefix}:BreakerMinimumThroughput is {BreakerMinimumThroughput}; set at least 2.";
        if (BreakerSamplingMs < 500) yield return $"{prefix}:BreakerSamplingMs is {BreakerSamplingMs}; set at least 500.";
        if (BreakerBreakMs < 500) yield return $"{prefix}:BreakerBreakMs is {BreakerBreakMs}; set at least 500.";
    }
}

/// <summary>Byte sizes written the way people write them: 512MB, 4GiB, 1g, 1048576, and Kubernetes quantities such as 64Gi.</summary>
public static class ByteSize
{
    public static long Parse(string text) =>
        TryParse(text, out long v) ? v : throw new ArgumentException($"'{text}' is not a size; write e.g. 512MB, 4GiB or a number of bytes.");

    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text)) return false;
        var s = text.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.')) i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out double number)) return false;
        long unit = s[i..].Trim().ToLowerInvariant() switch
        {
            "" or "b" => 1,
            "k" or "kb" or "kib" or "ki" => 1L << 10,
            "m" or "mb" or "mib" or "mi" => 1L << 20,
            "g" or "gb" or "gib" or "gi" => 1L << 30,
            "t" or "tb" or "tib" or "ti" => 1L << 40,
            _ => 0,
        };
        if (unit == 0 || number < 0 || number * unit > long.MaxValue / 2) return false;
        bytes = (long)(number * unit);
        return true;
    }
}
