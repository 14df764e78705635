// Router settings (configuration section "Router"; the command line maps
// --model, --workers, --discovery, --worker-service, --port, --host, --policy,
// --api-key and the other switches of RouterApp.Switches onto it). Immutable
// once bound; Validate returns every problem with the fix, and the host refuses
// to start on any.
using Platform.Router.Policies;

namespace Platform.Router.Configuration;

public sealed record RouterOptions
{
    public const string Section = "Router";

    /// <summary>The model directory (tokenizer.json, tokenizer_config.json, config.json), the same one the workers load;
    /// or hf://ORG/NAME[@REV], downloaded into the hub cache (HF_HOME) at start.</summary>
    public string? Model { get; init; }

    /// <summary>Download the model into the hub cache (or check the directory), then exit: the operator's init container.</summary>
    public bool DownloadOnly { get; init; }

    /// <summary>Comma-separated worker gRPC addresses, e.g. http://127.0.0.1:7001,http://127.0.0.1:7002 (static discovery).</summary>
    public string? Workers { get; init; }

    /// <summary>How the router finds its workers: "static" (the Workers list) or "kubernetes" (EndpointSlices of a Service).</summary>
    public string Discovery { get; init; } = StaticDiscovery;

    public const string StaticDiscovery = "static";
    public const string KubernetesDiscovery = "kubernetes";

    public bool UsesKubernetes => string.Equals(Discovery, KubernetesDiscovery, StringComparison.OrdinalIgnoreCase);

    public KubernetesDiscoveryOptions Kubernetes { get; init; } = new();

    /// <summary>The model name clients send; empty means the workers' served model name.</summary>
    public string? ServedModelName { get; init; }

    /// <summary>A Jinja chat template file (or chat_template.json) that overrides the model's own (vLLM's --chat-template).</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>The format the model writes tool calls in (vLLM's --tool-call-parser: hermes, llama3_json). Set, requests with
    /// tools get tool_choice "auto": the model's output is parsed into tool_calls. Unset, such requests must send tool_choice "none".</summary>
    public string? ToolCallParser { get; init; }

    /// <summary>vLLM's --enable-auto-tool-choice, accepted so vLLM command lines work: auto tool choice comes with a
    /// ToolCallParser, and this flag without one is a configuration error (it could not parse any call).</summary>
    public bool EnableAutoToolChoice { get; init; }

    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; } = 8000;

    /// <summary>Comma-separated bearer keys; empty means no authentication.</summary>
    public string? ApiKeys { get; init; }

    /// <summary>The request header whose value pins a session to a worker (kv-aware affinity).</summary>
    public string SessionHeader { get; init; } = "x-session-id";

    public PlacementOptions Placement { get; init; } = new();

    /// <summary>How often each worker's GetLoad is polled; a worker that fails a poll leaves the pool until it answers again.</summary>
    public int HealthPeriodMs { get; init; } = 1000;
    /// <summary>Deadline of one health poll.</summary>
    public int HealthTimeoutMs { get; init; } = 2000;

    /// <summary>Retries on another worker when an attempt fails before its first token (SGLang uses up to 5).</summary>
    public int MaxRetries { get; init; } = 3;
    /// <summary>How many times a request may move to another worker when its worker fails after tokens were sent
    /// (a token-exact continuation, see MigratingStream); 0 turns migration off (the stream then ends with an error event).</summary>
    public int MigrationLimit { get; init; } = 3;
    /// <summary>First retry delay; doubles per retry, with jitter.</summary>
    public int RetryBaseDelayMs { get; init; } = 50;

    /// <summary>Breaker opens when at least this share of a worker's recent attempts failed …</summary>
    public double BreakerFailureRatio { get; init; } = 0.5;
    /// <summary>… out of at least this many attempts …</summary>
    public int BreakerMinimumThroughput { get; init; } = 5;
    /// <summary>… within this window.</summary>
    public int BreakerSamplingMs { get; init; } = 30_000;
    /// <summary>Then the worker gets no traffic for this long before one half-open probe.</summary>
    public int BreakerBreakMs { get; init; } = 30_000;

    /// <summary>Longest silence from a worker, before the first token and between tokens. While a request is queued
    /// or prefilling, the worker's progress reports count as activity, so a long prefill is bounded by silence, not by
    /// its length (RELIABILITY: a frozen worker errors within 30 s). Before the first token a silent worker's request
    /// is retried elsewhere.</summary>
    public int InactivityTimeoutMs { get; init; } = 30_000;
    /// <summary>Default overall deadline of a request, first byte to last (0: none). A request sets its own with the
    /// header <c>x-request-timeout</c> (seconds); past it the request ends with 504 (or an SSE error event).</summary>
    public int RequestTimeoutMs { get; init; }
    /// <summary>A streamed request still waiting for its first token (queued, or in a long prefill) gets an SSE
    /// comment line this often, so proxies with read timeouts (often 60 s) keep the connection; clients skip comments.</summary>
    public int KeepAliveIntervalMs { get; init; } = 10_000;

    /// <summary>Concurrent generation requests before 429.</summary>
    public int MaxConcurrentRequests { get; init; } = 1024;
    /// <summary>Largest request body accepted (413 above).</summary>
    public long MaxRequestBodyBytes { get; init; } = 16L << 20;
    /// <summary>Largest gRPC message either way (a 1M-token prompt of int32 ids is ~5 MB).</summary>
    public int MaxGrpcMessageBytes { get; init; } = 64 << 20;

    public IReadOnlyList<Uri> WorkerUris() =>
        (Workers ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(w => Uri.TryCreate(w, UriKind.Absolute, out var u) ? u : null)
            .OfType<Uri>()
            .ToArray();

    public IReadOnlyList<string> Keys() =>
        (ApiKeys ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Model))
            errors.Add("Router:Model is not set; pass --model DIR (the model directory the workers load; the router needs its tokenizer and config).");
        else if (Platform.Core.Models.Hub.HubModelReference.IsHubSource(Model))
        {
            // Downloaded when the router loads its model (or by --download-only); only the form is checked here.
            try { Platform.Core.Models.Hub.HubModelReference.Parse(Model); }
            catch (ArgumentException e) { errors.Add($"Router:Model: {e.Message}"); }
        }
        else if (!File.Exists(Path.Combine(Model, "tokenizer.json")) || !File.Exists(Path.Combine(Model, "config.json")))
            errors.Add($"Router:Model '{Model}' has no tokenizer.json or config.json; point --model at the model directory.");
        if (DownloadOnly) return errors; // only the model matters to --download-only
        if (ChatTemplate is { } template && !File.Exists(template) && !template.Contains("{{", StringComparison.Ordinal) && !template.Contains("{%", StringComparison.Ordinal))
            errors.Add($"Router:ChatTemplate '{template}' does not exist; pass --chat-template FILE (a Jinja file or chat_template.json).");
        if (ToolCallParser is { Length: > 0 } parser && Api.ToolCalls.ToolCallParser.Create(parser) is null)
            errors.Add($"Router:ToolCallParser is '{parser}'; use one of {string.Join(", ", Api.ToolCalls.ToolCallParser.Names)} (the format the model writes tool calls in: hermes for Qwen2.5/Qwen3/Hermes, llama3_json for Llama-3.1/3.2).");
        if (EnableAutoToolChoice && string.IsNullOrEmpty(ToolCallParser))
            errors.Add($"--enable-auto-tool-choice needs --tool-call-parser NAME ({string.Join(", ", Api.ToolCalls.ToolCallParser.Names)}): the format the model writes tool calls in.");
        var entries = (Workers ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (UsesKubernetes)
        {
            if (entries.Length > 0)
                errors.Add("Router:Workers is set but Router:Discovery is kubernetes; drop --workers (the workers come from the Service's EndpointSlices) or use --discovery static.");
            errors.AddRange((Kubernetes ?? new KubernetesDiscoveryOptions()).Validate($"{Section}:Kubernetes"));
        }
        else if (!string.Equals(Discovery, StaticDiscovery, StringComparison.OrdinalIgnoreCase))
            errors.Add($"Router:Discovery is '{Discovery}'; use --discovery static (with --workers) or --discovery kubernetes (with --worker-service).");
        else if (entries.Length == 0)
            errors.Add("Router:Workers is empty; pass --workers http://127.0.0.1:P1,http://127.0.0.1:P2 (or --discovery kubernetes --worker-service NAME in a cluster).");
        foreach (var w in entries)
            if (!Uri.TryCreate(w, UriKind.Absolute, out var u) || (u.Scheme != "http" && u.Scheme != "https"))
                errors.Add($"Router:Workers entry '{w}' is not an http:// or https:// address; write it like http://127.0.0.1:7001.");
        if (Port is < 0 or > 65535) errors.Add($"Router:Port is {Port}; use 0..65535 (0 picks a free port).");
        if (string.IsNullOrWhiteSpace(SessionHeader)) errors.Add("Router:SessionHeader is empty; name a header such as x-session-id.");
        Positive(errors, nameof(HealthPeriodMs), HealthPeriodMs);
        Positive(errors, nameof(HealthTimeoutMs), HealthTimeoutMs);
        Positive(errors, nameof(RetryBaseDelayMs), RetryBaseDelayMs);
        Positive(errors, nameof(BreakerMinimumThroughput), BreakerMinimumThroughput);
        Positive(errors, nameof(BreakerSamplingMs), BreakerSamplingMs);
        Positive(errors, nameof(BreakerBreakMs), BreakerBreakMs);
        if (RequestTimeoutMs < 0) errors.Add($"Router:RequestTimeoutMs is {RequestTimeoutMs}; use 0 (no deadline) or a positive number of milliseconds.");
        Positive(errors, nameof(KeepAliveIntervalMs), KeepAliveIntervalMs);
        Positive(errors, nameof(InactivityTimeoutMs), InactivityTimeoutMs);
        Positive(errors, nameof(MaxConcurrentRequests), MaxConcurrentRequests);
        Positive(errors, nameof(MaxGrpcMessageBytes), MaxGrpcMessageBytes);
        if (MaxRequestBodyBytes < 1024) errors.Add($"Router:MaxRequestBodyBytes is {MaxRequestBodyBytes}; allow at least 1024 bytes.");
        if (MigrationLimit is < 0 or > 10) errors.Add($"Router:MigrationLimit is {MigrationLimit}; use 0..10 (0 turns migration off).");
        if (MaxRetries is < 0 or > 10) errors.Add($"Router:MaxRetries is {MaxRetries}; use 0..10 (0 disables retries).");
        if (BreakerSamplingMs < 500) errors.Add($"Router:BreakerSamplingMs is {BreakerSamplingMs}; Polly needs at least 500 ms.");
        if (BreakerBreakMs < 500) errors.Add($"Router:BreakerBreakMs is {BreakerBreakMs}; Polly needs at least 500 ms.");
        if (!(BreakerFailureRatio > 0 && BreakerFailureRatio <= 1))
            errors.Add($"Router:BreakerFailureRatio is {BreakerFailureRatio}; use a share in (0, 1], e.g. 0.5.");
        errors.AddRange((Placement ?? new PlacementOptions()).Validate($"{Section}:Placement"));
        return errors;
    }

    private static void Positive(List<string> errors, string name, long value)
    {
        if (value <= 0) errors.Add($"Router:{name} is {value}; set a positive value.");
    }
}
