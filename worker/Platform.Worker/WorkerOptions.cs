// Settings of one worker process, bound from configuration (section "Worker":
// appsettings, environment variables such as Worker__Port, or the command-line
// switches in WorkerCommandLine) and validated when the host starts, with
// messages that name the switch to change.
using System.Net;
using Microsoft.Extensions.Options;
using Platform.Core.Models.Hub;
using Platform.Core.Workers;
using Platform.Engine;
using Platform.KvCache;

namespace Platform.Worker;

public sealed class WorkerOptions
{
    public const string Section = "Worker";

    /// <summary>HuggingFace model directory (config.json, *.safetensors, tokenizer.json), or hf://ORG/NAME[@REV]: downloaded into the hub cache (HF_HOME) at start.</summary>
    public string ModelDirectory { get; set; } = "";
    /// <summary>Download the model into the hub cache (or check the directory), then exit: the operator's init container.</summary>
    public bool DownloadOnly { get; set; }
    /// <summary>The model name clients ask for; defaults to the model directory's name, or ORG/NAME for hf://.</summary>
    public string? ServedModelName { get; set; }
    /// <summary>Identity in KV events and GetInfo; defaults to $HOSTNAME (the pod name) or machine-pid.</summary>
    public string? WorkerId { get; set; }
    /// <summary>IP address to listen on (127.0.0.1 locally, 0.0.0.0 in a pod).</summary>
    public string Host { get; set; } = "127.0.0.1";
    /// <summary>gRPC port (HTTP/2 cleartext only); 0 picks a free port and prints it.</summary>
    public int Port { get; set; } = 50051;
    /// <summary>HTTP/1.1 port for /healthz, /readyz and /metrics (probes and Prometheus cannot speak cleartext HTTP/2); 0 picks a free port.</summary>
    public int HttpPort { get; set; } = 8080;
    /// <summary>After SIGTERM, how long in-flight streams may run before they are aborted.</summary>
    public double DrainGraceSeconds { get; set; } = 30;
    /// <summary>Engine event batches buffered per KV event subscriber before it is disconnected (it then resyncs with a snapshot).</summary>
    public int KvSubscriberBufferBatches { get; set; } = 4096;
    /// <summary>Largest gRPC message accepted; a 1M-token prompt is up to 5 MB of varints.</summary>
    public int MaxMessageMegabytes { get; set; } = 64;
    /// <summary>How often health results are pushed to gRPC Watch callers.</summary>
    public double HealthPublishSeconds { get; set; } = 1;
    /// <summary>An engine with work that finishes no step for this long is reported dead (liveness) and unready.</summary>
    public double EngineStallSeconds { get; set; } = 300;
    /// <summary>Console log format: "simple" (one line per entry) or "json" (one object per line).</summary>
    public string LogFormat { get; set; } = "simple";
    /// <summary>Print the PLATFORM_WORKER_* lines on stdout (for process fixtures and `platform up`).</summary>
    public bool AnnounceOnStdout { get; set; } = true;

    /// <summary>DistAttention: "on" lends spare KV memory to peers and lets sequences too long for this worker borrow from them.</summary>
    public string DistAttention { get; set; } = "off";
    /// <summary>gRPC addresses of the peer workers (comma-separated http://HOST:PORT) that may lend KV memory.</summary>
    public string? Peers { get; set; }
    /// <summary>Caps the KV pool at this many tokens (rounded up to whole blocks); wins over every other KV size setting.</summary>
    public int? KvTokens { get; set; }
    /// <summary>
    /// Memory this worker may use in all (e.g. 6GiB): weights, KV pool, host KV tier, runtime. The KV pool takes
    /// its fraction of what is left after the weights and the host tier's budget. `platform up` sets it to a share of
    /// the machine so N workers never size their pools from the same free memory. Empty: no budget beyond the
    /// host's available memory and the container's limit.
    /// </summary>
    public string? MemoryBudget { get; set; }

    public bool DistAttentionEnabled => string.Equals(DistAttention, "on", StringComparison.OrdinalIgnoreCase);

    public IReadOnlyList<string> PeerAddresses =>
        (Peers ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public EngineOptions Engine { get; set; } = new();

    /// <summary>The engine's settings with the worker-level switches (--kv-tokens, --dist-attention, --memory-budget) applied.</summary>
    public EngineOptions ResolvedEngine => Engine with
    {
        NumKvBlocks = KvTokens is { } tokens ? (tokens + Engine.BlockSize - 1) / Engine.BlockSize : Engine.NumKvBlocks,
        LendKvBlocks = DistAttentionEnabled,
        MemoryBudgetBytes = EngineMemoryBudgetBytes ?? Engine.MemoryBudgetBytes,
    };

    /// <summary>--memory-budget less the host KV tier's budget (that memory is this worker's too); null without a budget.</summary>
    public long? EngineMemoryBudgetBytes =>
        ByteSize.TryParse(MemoryBudget, out long budget)
            ? budget - (!KvTier.Mode.Equals("off", StringComparison.OrdinalIgnoreCase) && ByteSize.TryParse(KvTier.HostMemory, out long host) ? host : 0)
            : null;
    /// <summary>KV tier below the device pool (host memory, shared Redis store). Off unless configured; `platform up` turns it on.</summary>
    public KvTierOptions KvTier { get; set; } = new() { Mode = "off" };

    /// <summary>The KV tier settings with the Redis password taken from $REDIS_PASSWORD when not configured (the operator mounts it so).</summary>
    public KvTierOptions ResolvedKvTier =>
        KvTier.Remote.Password is null && Environment.GetEnvironmentVariable("REDIS_PASSWORD") is { Length: > 0 } pw
            ? KvTier with { Remote = KvTier.Remote with { Password = pw } }
            : KvTier;

    public string ResolvedServedModelName =>
        !string.IsNullOrWhiteSpace(ServedModelName) ? ServedModelName : HubModelSource.DefaultServedName(ModelDirectory);

    public string ResolvedWorkerId =>
        !string.IsNullOrWhiteSpace(WorkerId) ? WorkerId
        : Environment.GetEnvironmentVariable("HOSTNAME") is { Length: > 0 } hostName ? hostName
        : $"{Environment.MachineName}-{Environment.ProcessId}";

    public TimeSpan DrainGracePeriod => TimeSpan.FromSeconds(DrainGraceSeconds);

    /// <summary>Stopping waits up to the drain grace period, then a margin for aborted streams and the servers (the host's ShutdownTimeout).</summary>
    public TimeSpan ShutdownTimeout => DrainGracePeriod + TimeSpan.FromSeconds(15);

    /// <summary>The listen address; "localhost" means 127.0.0.1 (Kestrel cannot bind port 0 on the name).</summary>
    public bool TryGetListenAddress(out IPAddress address)
    {
        if (string.Equals(Host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
            return true;
        }
        return IPAddress.TryParse(Host, out address!);
    }
}

/// <summary>Command-line switches of platform-worker (named once, in Core's WorkerSwitches), mapped onto configuration keys.</summary>
public static class WorkerCommandLine
{
    public static readonly IReadOnlyDictionary<string, string> SwitchMappings = new Dictionary<string, string>
    {
        [WorkerSwitches.Model] = "Worker:ModelDirectory",
        [WorkerSwitches.DownloadOnly] = "Worker:DownloadOnly",
        [WorkerSwitches.ServedModelName] = "Worker:ServedModelName",
        [WorkerSwitches.WorkerId] = "Worker:WorkerId",
        [WorkerSwitches.Host] = "Worker:Host",
        [WorkerSwitches.Port] = "Worker:Port",
        [WorkerSwitches.HttpPort] = "Worker:HttpPort",
        [WorkerSwitches.DrainGraceSeconds] = "Worker:DrainGraceSeconds",
        [WorkerSwitches.KvSubscriberBuffer] = "Worker:KvSubscriberBufferBatches",
        [WorkerSwitches.MaxMessageMb] = "Worker:MaxMessageMegabytes",
        [WorkerSwitches.HealthPublishSeconds] = "Worker:HealthPublishSeconds",
        [WorkerSwitches.Announce] = "Worker:AnnounceOnStdout",
        [WorkerSwitches.EngineStallSeconds] = "Worker:EngineStallSeconds",
        [WorkerSwitches.LogFormat] = "Worker:LogFormat",
        [WorkerSwitches.LogLevel] = "Logging:LogLevel:Default",
        [WorkerSwitches.BlockSize] = "Worker:Engine:BlockSize",
        [WorkerSwitches.MaxBatchTokens] = "Worker:Engine:MaxBatchTokens",
        [WorkerSwitches.TargetStepMs] = "Worker:Engine:TargetStepMs",
        [WorkerSwitches.MaxRunningRequests] = "Worker:Engine:MaxRunningRequests",
        [WorkerSwitches.KvBlocks] = "Worker:Engine:NumKvBlocks",
        [WorkerSwitches.KvBytes] = "Worker:Engine:KvCacheBytes",
        [WorkerSwitches.KvMemoryFraction] = "Worker:Engine:KvCacheMemoryFraction",
        [WorkerSwitches.Dtype] = "Worker:Engine:ComputeDtype",
        [WorkerSwitches.WeightDtype] = "Worker:Engine:WeightDtype",
        [WorkerSwitches.Device] = "Worker:Engine:Device",
        [WorkerSwitches.Quantization] = "Worker:Engine:Quantization",
        [WorkerSwitches.Threads] = "Worker:Engine:Threads",
        [WorkerSwitches.MaxContext] = "Worker:Engine:MaxContextTokens",
        [WorkerSwitches.Seed] = "Worker:Engine:DefaultSeed",
        [WorkerSwitches.DistAttention] = "Worker:DistAttention",
        [WorkerSwitches.Peers] = "Worker:Peers",
        [WorkerSwitches.KvTokens] = "Worker:KvTokens",
        [WorkerSwitches.MemoryBudget] = "Worker:MemoryBudget",
        [WorkerSwitches.DistMaxPeers] = "Worker:Engine:DistMaxPeers",
        [WorkerSwitches.DistLeaseMs] = "Worker:Engine:DistLeaseMs",
        [WorkerSwitches.LendReserveFraction] = "Worker:Engine:LendReserveFraction",
        [WorkerSwitches.KvTier] = "Worker:KvTier:Mode",
        [WorkerSwitches.KvHostMemory] = "Worker:KvTier:HostMemory",
        [WorkerSwitches.KvStoreDtype] = "Worker:KvTier:StoreDtype",
        [WorkerSwitches.KvWriteQueue] = "Worker:KvTier:WriteQueueBlocks",
        [WorkerSwitches.Redis] = "Worker:KvTier:Remote:Address",
        [WorkerSwitches.RedisUser] = "Worker:KvTier:Remote:User",
        [WorkerSwitches.RedisPassword] = "Worker:KvTier:Remote:Password",
        [WorkerSwitches.RedisTls] = "Worker:KvTier:Remote:Tls",
        [WorkerSwitches.KvKeyPrefix] = "Worker:KvTier:Remote:KeyPrefix",
        [WorkerSwitches.KvTtlSeconds] = "Worker:KvTier:Remote:TtlSeconds",
        [WorkerSwitches.KvRemoteTimeoutMs] = "Worker:KvTier:Remote:OperationTimeoutMs",
    };

    /// <summary>
    /// The command line as the configuration provider reads it: a bare <c>--download-only</c> (last, or followed
    /// by another switch) becomes <c>--download-only true</c>; the provider would otherwise take the next switch as its value.
    /// </summary>
    public static string[] Normalize(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var result = new List<string>(args.Length + 1);
        for (int i = 0; i < args.Length; i++)
        {
            result.Add(args[i]);
            if (args[i] == WorkerSwitches.DownloadOnly && (i + 1 == args.Length || args[i + 1].StartsWith('-'))) result.Add("true");
        }
        return [.. result];
    }

    public const string Usage = """
        platform-worker: serves one model over gRPC (Inference + grpc.health.v1) with /healthz, /readyz and /metrics over HTTP/1.1.

        usage: platform-worker --model DIR|hf://ORG/NAME[@REV] [options]
          --model DIR                 HuggingFace model directory (config.json, *.safetensors, tokenizer.json)   [required]
          --model hf://ORG/NAME[@REV] download from the hub into its cache at start (HF_ENDPOINT, HF_TOKEN, HF_HOME,
                                      HF_HUB_OFFLINE=1: the cache only), then load the snapshot
          --download-only             download (or check) the model, then exit 0; non-zero with the error (an init step)
          --served-model-name NAME    name clients use (default: the directory's name; ORG/NAME for hf://)
          --worker-id ID              identity in KV events and GetInfo (default: $HOSTNAME or machine-pid)
          --host IP                   listen address (default 127.0.0.1; 0.0.0.0 in a pod)
          --port N                    gRPC port, HTTP/2 cleartext (default 50051; 0 = pick a free one)
          --http-port N               HTTP/1.1 port for health and metrics (default 8080; 0 = pick a free one)
          --drain-grace-seconds S     after SIGTERM, time for in-flight streams to finish (default 30)
          --kv-subscriber-buffer N    event batches buffered per KV subscriber before it is cut off (default 4096)
          --max-message-mb N          largest gRPC message accepted (default 64)
          --health-publish-seconds S  period of gRPC health Watch updates (default 1)
          --engine-stall-seconds S    engine with work but no finished step for S seconds = dead (default 300)
          --announce true|false       print PLATFORM_WORKER_* lines on stdout (default true)
          --log-format simple|json    console log format (default simple)
          --log-level LEVEL           Trace, Debug (per-request lines), Information (default), Warning, ...
        engine:
          --block-size N --max-batch-tokens N --max-running-requests N --kv-blocks N --kv-bytes N
          --kv-memory-fraction F --dtype float32|bfloat16|float16 --threads N --max-context N --seed N
          --weight-dtype auto|float32|bfloat16|float16
                                      width the weight matrices are held in (default auto: the checkpoint's
                                      bfloat16/float16, widened in registers; float32 widens them at load)
          --device cpu|cuda[:N]       where the model, KV cache and sampling live (default cpu; cuda needs the
                                      CUDA build, -p:TorchBackend=cuda, and a GPU: it stops at start otherwise)
          --quantization none|int8    int8: decoder-layer projections quantized at load (one fp16 scale per 32
                                      inputs, ~1.06 bytes per weight; needs --dtype float32; default none)
          --target-step-ms N          target time of one engine step: prefill chunks are sized by their cost
                                      (attention grows with the context) so decodes, new requests and aborts
                                      wait at most about this long behind a long prompt (default 250; 0 = tokens only)
          --kv-tokens N               cap the KV pool at N tokens (wins over the other KV sizes)
          --memory-budget SIZE        memory this worker may use in all, e.g. 6GiB; the KV pool takes its fraction
                                      of what is left after the weights and --kv-host-memory (default: none; the
                                      pool is sized from the smaller of MemAvailable and the cgroup's limit)
        DistAttention (a sequence too long for one worker keeps part of its KV on peers):
          --dist-attention on|off     lend spare KV memory to peers and borrow from them (default off)
          --peers URL,URL             gRPC addresses of the peer workers
          --dist-max-peers N          creditors per sequence at most (default 4)
          --dist-lease-ms N           lent blocks return to the pool N ms after the borrower goes silent (default 15000)
          --lend-reserve-fraction F   share of the pool never lent (default 0.1)
        KV tier (docs/kvcache.md):
          --kv-tier off|host|remote   off (default): device pool only; host: + host memory; remote: + shared Redis store
          --kv-host-memory SIZE       host-memory budget, e.g. 4GiB (default 1GiB)
          --kv-store-dtype auto|float16  stored block dtype (auto = the compute dtype, lossless; float16 only for float32)
          --redis HOST:PORT           the shared store (with --kv-tier remote); --redis-user, --redis-password
                                      (or $REDIS_PASSWORD), --redis-tls true
          --kv-key-prefix P --kv-ttl-seconds N --kv-remote-timeout-ms N --kv-write-queue N

        Every option is also a configuration key (Worker:Port, Worker:Engine:BlockSize, ...) and an
        environment variable (Worker__Port, Worker__Engine__BlockSize, ...).
        With port 0 the worker prints, once bound:
          PLATFORM_WORKER_LISTENING http://IP:PORT         (gRPC)
          PLATFORM_WORKER_HTTP_LISTENING http://IP:PORT    (health, metrics)
        and once the model is loaded: PLATFORM_WORKER_READY
        """;
}

/// <summary>Start-time validation: every failure says which switch or key fixes it.</summary>
internal sealed class WorkerOptionsValidator : IValidateOptions<WorkerOptions>
{
    public ValidateOptionsResult Validate(string? name, WorkerOptions o)
    {
        var errors = new List<string>();
        if (HubModelReference.IsHubSource(o.ModelDirectory))
        {
            // Downloaded when the engine loads (or by --download-only); only the form is checked here.
            try { HubModelReference.Parse(o.ModelDirectory); }
            catch (ArgumentException e) { errors.Add($"--model: {e.Message}"); }
        }
        else if (o.ModelDirectory.StartsWith("pvc://", StringComparison.Ordinal))
            errors.Add($"--model '{o.ModelDirectory}' is a volume claim, not a directory: put the model in a volume and pass its mounted directory (the operator mounts pvc://CLAIM/PATH at /models/PATH).");
        else if (string.IsNullOrWhiteSpace(o.ModelDirectory))
            errors.Add("no model directory: pass --model DIR (a HuggingFace directory with config.json and *.safetensors) or set Worker__ModelDirectory; `platform model create-random` writes a small test model.");
        else if (!Directory.Exists(o.ModelDirectory))
            errors.Add($"the model directory '{o.ModelDirectory}' does not exist; check --model.");
        else if (!File.Exists(Path.Combine(o.ModelDirectory, "config.json")))
            errors.Add($"the model directory '{o.ModelDirectory}' has no config.json; --model must point at a HuggingFace model directory.");
        if (!o.TryGetListenAddress(out _))
            errors.Add($"--host '{o.Host}' is not an IP address; use 127.0.0.1 for loopback or 0.0.0.0 for every interface.");
        if (o.Port is < 0 or > 65535) errors.Add($"--port must be in 0..65535 (0 picks a free port), got {o.Port}.");
        if (o.HttpPort is < 0 or > 65535) errors.Add($"--http-port must be in 0..65535 (0 picks a free port), got {o.HttpPort}.");
        if (o.Port != 0 && o.Port == o.HttpPort)
            errors.Add($"--port and --http-port are both {o.Port}; gRPC (HTTP/2) and health/metrics (HTTP/1.1) need two ports.");
        if (!double.IsFinite(o.DrainGraceSeconds) || o.DrainGraceSeconds < 0 || o.DrainGraceSeconds > 3600)
            errors.Add($"--drain-grace-seconds must be between 0 and 3600, got {o.DrainGraceSeconds}.");
        if (o.MemoryBudget is { } budget)
        {
            if (!ByteSize.TryParse(budget, out long budgetBytes) || budgetBytes < 1)
                errors.Add($"--memory-budget '{budget}' is not a size; write e.g. 6GiB or 512MB.");
            else if (o.EngineMemoryBudgetBytes is < 1)
                errors.Add($"--memory-budget {budget} leaves nothing once the host KV tier's --kv-host-memory {o.KvTier.HostMemory} is set aside; raise the budget or lower --kv-host-memory.");
        }
        if (o.KvSubscriberBufferBatches < 1) errors.Add($"--kv-subscriber-buffer must be at least 1, got {o.KvSubscriberBufferBatches}.");
        if (o.MaxMessageMegabytes is < 1 or > 2047) errors.Add($"--max-message-mb must be in 1..2047, got {o.MaxMessageMegabytes}.");
        if (!double.IsFinite(o.HealthPublishSeconds) || o.HealthPublishSeconds < 1)
            errors.Add($"--health-publish-seconds must be at least 1 (the health publisher's minimum period), got {o.HealthPublishSeconds}.");
        if (o.LogFormat is not ("simple" or "json"))
            errors.Add($"--log-format must be simple or json, got '{o.LogFormat}'.");
        if (!double.IsFinite(o.EngineStallSeconds) || o.EngineStallSeconds < 1)
            errors.Add($"--engine-stall-seconds must be at least 1 (longer than the slowest engine step), got {o.EngineStallSeconds}.");
        if (o.DistAttention is not ("on" or "off"))
            errors.Add($"--dist-attention must be on or off, got '{o.DistAttention}'.");
        foreach (var peer in o.PeerAddresses)
            if (!Uri.TryCreate(peer, UriKind.Absolute, out var uri) || uri.Scheme != "http")
                errors.Add($"--peers: '{peer}' is not an http://HOST:PORT gRPC address of a peer worker.");
        if (o.KvTokens is < 1) errors.Add($"--kv-tokens must be positive, got {o.KvTokens}.");
        var kvTier = o.KvTier ?? new KvTierOptions();
        errors.AddRange(kvTier.Validate());
        // Any compute dtype works with the KV tier (blocks are stored in it); only float16 storage of bfloat16 is refused.
        if (!kvTier.Mode.Equals("off", StringComparison.OrdinalIgnoreCase)
            && Platform.Engine.KvCache.KvTierDtypes.Validate(o.ResolvedEngine.ComputeDtype, kvTier.StoreDtype) is { } dtypeError)
            errors.Add(dtypeError);
        if (Platform.Core.Workers.ComputeDevice.TryParse(o.ResolvedEngine.Device, out var device, out _) && !device.IsCpu)
        {
            // Checked here so a worker on a machine without the device stops at once (exit 2) with this line, not a stack trace.
            if (Platform.Engine.Torch.TorchDevices.Unavailable(device) is { } unavailable) errors.Add(unavailable);
            // DistAttention and the KV tier run there too: partial attention and lent-KV writes use libtorch ops on the
            // pools (PagedKvStore's tensor path), tier transfers go through staged, pinned batches (KvTierTransfer).
        }
        try
        {
            o.ResolvedEngine.Validate();
        }
        catch (ArgumentException e)
        {
            errors.Add($"engine: {e.Message} (engine switches: --block-size, --weight-dtype, --quantization, --device, --max-batch-tokens, --target-step-ms, --max-running-requests, --kv-blocks, --kv-bytes, --kv-memory-fraction, --threads, --max-context).");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
