// vLLM's Prometheus metric names, exactly as vLLM spells them (colons included), so dashboards
// and alerts written for vLLM work on our workers unchanged. Defined once: the worker exports
// them (Platform.Worker.WorkerMetrics, through prometheus-net since OpenTelemetry instrument
// names cannot contain ':'), tests and tools read them from here. Every series carries the
// model_name label, as vLLM's do.
namespace Platform.Core.Telemetry;

public static class VllmMetricNames
{
    /// <summary>Label on every series: the served model name.</summary>
    public const string ModelNameLabel = "model_name";

    /// <summary>Label of <see cref="RequestSuccessTotal"/>: stop, length, abort or error.</summary>
    public const string FinishedReasonLabel = "finished_reason";

    /// <summary>Gauge: requests in the running batch.</summary>
    public const string NumRequestsRunning = "vllm:num_requests_running";

    /// <summary>Gauge: requests waiting to be scheduled.</summary>
    public const string NumRequestsWaiting = "vllm:num_requests_waiting";

    /// <summary>Gauge in [0, 1]: KV cache blocks in use / total.</summary>
    public const string KvCacheUsagePerc = "vllm:kv_cache_usage_perc";

    /// <summary>Histogram (seconds): Generate call to first token.</summary>
    public const string TimeToFirstTokenSeconds = "vllm:time_to_first_token_seconds";

    /// <summary>Histogram (seconds): between consecutive output tokens of a request.</summary>
    public const string InterTokenLatencySeconds = "vllm:inter_token_latency_seconds";

    /// <summary>Histogram (seconds): Generate call to its last chunk.</summary>
    public const string E2eRequestLatencySeconds = "vllm:e2e_request_latency_seconds";

    /// <summary>Counter: prompt tokens of ended requests.</summary>
    public const string PromptTokensTotal = "vllm:prompt_tokens_total";

    /// <summary>Counter: generated tokens.</summary>
    public const string GenerationTokensTotal = "vllm:generation_tokens_total";

    /// <summary>Counter: prompt tokens looked up in the prefix cache (full blocks × block size).</summary>
    public const string PrefixCacheQueriesTotal = "vllm:prefix_cache_queries_total";

    /// <summary>Counter: prompt tokens found in the prefix cache.</summary>
    public const string PrefixCacheHitsTotal = "vllm:prefix_cache_hits_total";

    /// <summary>Counter: requests preempted for lack of KV blocks.</summary>
    public const string NumPreemptionsTotal = "vllm:num_preemptions_total";

    /// <summary>Histogram (seconds): arrival at the engine to first scheduled (time in the WAITING phase).</summary>
    public const string RequestQueueTimeSeconds = "vllm:request_queue_time_seconds";

    /// <summary>Histogram (seconds): first scheduled to first token (time in the PREFILL phase).</summary>
    public const string RequestPrefillTimeSeconds = "vllm:request_prefill_time_seconds";

    /// <summary>Counter: ended requests by <see cref="FinishedReasonLabel"/>.</summary>
    public const string RequestSuccessTotal = "vllm:request_success_total";

    /// <summary>Every name above, for tests and dashboards that check all are served.</summary>
    public static readonly IReadOnlyList<string> All =
    [
        NumRequestsRunning, NumRequestsWaiting, KvCacheUsagePerc, TimeToFirstTokenSeconds, InterTokenLatencySeconds,
        E2eRequestLatencySeconds, PromptTokensTotal, GenerationTokensTotal, PrefixCacheQueriesTotal, PrefixCacheHitsTotal,
        NumPreemptionsTotal, RequestSuccessTotal, RequestQueueTimeSeconds, RequestPrefillTimeSeconds,
    ];
}
