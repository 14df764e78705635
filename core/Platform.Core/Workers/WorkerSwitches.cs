// The command-line switches of platform-worker, spelled once. The worker maps
// them onto its configuration keys (WorkerCommandLine.SwitchMappings); every
// launcher (the operator's StatefulSet, `platform up`, the benches, the test
// fixtures) writes them through WorkerArguments.
namespace Platform.Core.Workers;

public static class WorkerSwitches
{
    public const string Model = "--model";
    /// <summary>Download the model (an hf:// source) into the hub cache, or check the directory, then exit: a pod's init step.</summary>
    public const string DownloadOnly = "--download-only";
    public const string ServedModelName = "--served-model-name";
    public const string WorkerId = "--worker-id";
    public const string Host = "--host";
    public const string Port = "--port";
    public const string HttpPort = "--http-port";
    public const string DrainGraceSeconds = "--drain-grace-seconds";
    public const string KvSubscriberBuffer = "--kv-subscriber-buffer";
    public const string MaxMessageMb = "--max-message-mb";
    public const string HealthPublishSeconds = "--health-publish-seconds";
    public const string Announce = "--announce";
    public const string EngineStallSeconds = "--engine-stall-seconds";
    public const string LogFormat = "--log-format";
    public const string LogLevel = "--log-level";
    public const string BlockSize = "--block-size";
    public const string MaxBatchTokens = "--max-batch-tokens";
    public const string TargetStepMs = "--target-step-ms";
    public const string MaxRunningRequests = "--max-running-requests";
    public const string KvBlocks = "--kv-blocks";
    public const string KvBytes = "--kv-bytes";
    public const string KvMemoryFraction = "--kv-memory-fraction";
    public const string Dtype = "--dtype";
    /// <summary>Width the weights are held in: auto (the checkpoint's), float32, bfloat16, float16.</summary>
    public const string WeightDtype = "--weight-dtype";
    /// <summary>Where the engine computes: cpu (default) or cuda[:N]; values parsed by ComputeDevice.</summary>
    public const string Device = "--device";
    /// <summary>Weight quantization: none, or int8 (one fp16 scale per 32 inputs; float32 compute only).</summary>
    public const string Quantization = "--quantization";
    public const string Threads = "--threads";
    public const string MaxContext = "--max-context";
    public const string Seed = "--seed";
    public const string DistAttention = "--dist-attention";
    public const string Peers = "--peers";
    public const string KvTokens = "--kv-tokens";
    public const string MemoryBudget = "--memory-budget";
    public const string DistMaxPeers = "--dist-max-peers";
    public const string DistLeaseMs = "--dist-lease-ms";
    public const string LendReserveFraction = "--lend-reserve-fraction";
    public const string KvTier = "--kv-tier";
    public const string KvHostMemory = "--kv-host-memory";
    public const string KvStoreDtype = "--kv-store-dtype";
    public const string KvWriteQueue = "--kv-write-queue";
    public const string Redis = "--redis";
    public const string RedisUser = "--redis-user";
    public const string RedisPassword = "--redis-password";
    public const string RedisTls = "--redis-tls";
    public const string KvKeyPrefix = "--kv-key-prefix";
    public const string KvTtlSeconds = "--kv-ttl-seconds";
    public const string KvRemoteTimeoutMs = "--kv-remote-timeout-ms";
}
