// A typed platform-worker command line. Launchers set the fields they care
// about and call ToArgs(); a null field is left out, so the worker's default
// applies. Values are written in the invariant culture, in the forms the
// worker's configuration binder reads (on/off for DistAttention, true/false
// for flags, comma-separated peers). A round-trip test binds ToArgs() with the
// worker's own parser for every field (tests/Platform.Worker.Tests).
using System.Globalization;

namespace Platform.Core.Workers;

public sealed record WorkerArguments
{
    /// <summary>HuggingFace model directory, or hf://ORG/NAME[@REV] (downloaded into the hub cache at start).</summary>
    public string? Model { get; init; }
    /// <summary>Only download (or verify) the model, then exit 0, or non-zero with the error.</summary>
    public bool? DownloadOnly { get; init; }
    public string? ServedModelName { get; init; }
    public string? WorkerId { get; init; }
    /// <summary>Listen address; may be a placeholder the kubelet expands, such as $(POD_IP).</summary>
    public string? Host { get; init; }
    /// <summary>gRPC port (0 picks a free one).</summary>
    public int? Port { get; init; }
    /// <summary>HTTP/1.1 port for health and metrics (0 picks a free one).</summary>
    public int? HttpPort { get; init; }
    public string? Dtype { get; init; }
    /// <summary>Width the weight matrices are held in (auto, float32, bfloat16, float16).</summary>
    public string? WeightDtype { get; init; }
    /// <summary>cpu or cuda[:N] (ComputeDevice); null leaves the worker's default, cpu.</summary>
    public string? Device { get; init; }
    /// <summary>Weight quantization (none, int8).</summary>
    public string? Quantization { get; init; }
    public long? MaxContext { get; init; }
    public int? BlockSize { get; init; }
    public int? MaxBatchTokens { get; init; }
    /// <summary>Target wall time of an engine step in ms (0: steps bounded by tokens only).</summary>
    public int? TargetStepMs { get; init; }
    public int? MaxRunningRequests { get; init; }
    public double? KvMemoryFraction { get; init; }
    public int? KvBlocks { get; init; }
    public long? KvBytes { get; init; }
    public int? Threads { get; init; }
    public ulong? Seed { get; init; }
    /// <summary>simple | json.</summary>
    public string? LogFormat { get; init; }
    /// <summary>Trace, Debug, Information, Warning, ...</summary>
    public string? LogLevel { get; init; }
    public double? DrainGraceSeconds { get; init; }
    public int? KvSubscriberBuffer { get; init; }
    public int? MaxMessageMb { get; init; }
    public double? HealthPublishSeconds { get; init; }
    public double? EngineStallSeconds { get; init; }
    /// <summary>Print the PLATFORM_WORKER_* lines on stdout.</summary>
    public bool? Announce { get; init; }
    public bool? DistAttention { get; init; }
    /// <summary>Caps the KV pool at this many tokens.</summary>
    public int? KvTokens { get; init; }
    /// <summary>Memory the worker may use in all, as a size ("6GiB") or bytes.</summary>
    public string? MemoryBudget { get; init; }
    /// <summary>off | host | remote.</summary>
    public string? KvTier { get; init; }
    /// <summary>The shared store's HOST:PORT (with KvTier remote).</summary>
    public string? Redis { get; init; }
    public string? RedisUser { get; init; }
    public string? RedisPassword { get; init; }
    public bool? RedisTls { get; init; }
    public string? KvKeyPrefix { get; init; }
    public int? KvTtlSeconds { get; init; }
    public int? KvRemoteTimeoutMs { get; init; }
    /// <summary>Host-memory budget of the KV tier, as a size ("4GiB").</summary>
    public string? KvHostMemory { get; init; }
    /// <summary>auto | float16.</summary>
    public string? KvStoreDtype { get; init; }
    public int? KvWriteQueue { get; init; }
    public int? DistMaxPeers { get; init; }
    public int? DistLeaseMs { get; init; }
    public double? LendReserveFraction { get; init; }
    /// <summary>gRPC addresses of the DistAttention peers.</summary>
    public IReadOnlyList<string>? Peers { get; init; }

    /// <summary>The switches and their values, in a fixed order (a pod spec built from them is deterministic).</summary>
    public List<string> ToArgs()
    {
        var args = new List<string>();
        void Add(string name, string? value)
        {
            if (value is null) return;
            args.Add(name);
            args.Add(value);
        }
        var inv = CultureInfo.InvariantCulture;
        Add(WorkerSwitches.Model, Model);
        Add(WorkerSwitches.DownloadOnly, Flag(DownloadOnly));
        Add(WorkerSwitches.ServedModelName, ServedModelName);
        Add(WorkerSwitches.WorkerId, WorkerId);
        Add(WorkerSwitches.Host, Host);
        Add(WorkerSwitches.Port, Port?.ToString(inv));
        Add(WorkerSwitches.HttpPort, HttpPort?.ToString(inv));
        Add(WorkerSwitches.Dtype, Dtype);
        Add(WorkerSwitches.WeightDtype, WeightDtype);
        Add(WorkerSwitches.Device, Device);
        Add(WorkerSwitches.Quantization, Quantization);
        Add(WorkerSwitches.MaxContext, MaxContext?.ToString(inv));
        Add(WorkerSwitches.BlockSize, BlockSize?.ToString(inv));
        Add(WorkerSwitches.MaxBatchTokens, MaxBatchTokens?.ToString(inv));
        Add(WorkerSwitches.TargetStepMs, TargetStepMs?.ToString(inv));
        Add(WorkerSwitches.MaxRunningRequests, MaxRunningRequests?.ToString(inv));
        Add(WorkerSwitches.KvMemoryFraction, KvMemoryFraction?.ToString(inv));
        Add(WorkerSwitches.KvBlocks, KvBlocks?.ToString(inv));
        Add(WorkerSwitches.KvBytes, KvBytes?.ToString(inv));
        Add(WorkerSwitches.Threads, Threads?.ToString(inv));
        Add(WorkerSwitches.Seed, Seed?.ToString(inv));
        Add(WorkerSwitches.LogFormat, LogFormat);
        Add(WorkerSwitches.LogLevel, LogLevel);
        Add(WorkerSwitches.DrainGraceSeconds, DrainGraceSeconds?.ToString(inv));
        Add(WorkerSwitches.KvSubscriberBuffer, KvSubscriberBuffer?.ToString(inv));
        Add(WorkerSwitches.MaxMessageMb, MaxMessageMb?.ToString(inv));
        Add(WorkerSwitches.HealthPublishSeconds, HealthPublishSeconds?.ToString(inv));
        Add(WorkerSwitches.EngineStallSeconds, EngineStallSeconds?.ToString(inv));
        Add(WorkerSwitches.Announce, Flag(Announce));
        Add(WorkerSwitches.DistAttention, DistAttention is { } on ? (on ? "on" : "off") : null);
        Add(WorkerSwitches.KvTokens, KvTokens?.ToString(inv));
        Add(WorkerSwitches.MemoryBudget, MemoryBudget);
        Add(WorkerSwitches.KvTier, KvTier);
        Add(WorkerSwitches.Redis, Redis);
        Add(WorkerSwitches.RedisUser, RedisUser);
        Add(WorkerSwitches.RedisPassword, RedisPassword);
        Add(WorkerSwitches.RedisTls, Flag(RedisTls));
        Add(WorkerSwitches.KvKeyPrefix, KvKeyPrefix);
        Add(WorkerSwitches.KvTtlSeconds, KvTtlSeconds?.ToString(inv));
        Add(WorkerSwitches.KvRemoteTimeoutMs, KvRemoteTimeoutMs?.ToString(inv));
        Add(WorkerSwitches.KvHostMemory, KvHostMemory);
        Add(WorkerSwitches.KvStoreDtype, KvStoreDtype);
        Add(WorkerSwitches.KvWriteQueue, KvWriteQueue?.ToString(inv));
        Add(WorkerSwitches.DistMaxPeers, DistMaxPeers?.ToString(inv));
        Add(WorkerSwitches.DistLeaseMs, DistLeaseMs?.ToString(inv));
        Add(WorkerSwitches.LendReserveFraction, LendReserveFraction?.ToString(inv));
        Add(WorkerSwitches.Peers, Peers is not { Count: > 0 } ? null : string.Join(',', Peers));
        return args;
    }

    private static string? Flag(bool? value) => value switch
    {
        true => "true",
        false => "false",
        null => null,
    };
}
