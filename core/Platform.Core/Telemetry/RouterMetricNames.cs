// The metric contract between the router and the operator's autoscaler, defined once:
// the router exports these series on its /metrics (Telemetry/RouterMetrics.cs) and the
// operator's PrometheusRouterLoadSource reads them by the same constants. Each is one
// unlabelled gauge for the whole pool the router sees, so the operator's rule (sum the
// queue series, average the utilisation series) gives the pool's values, and a router
// with no worker in its pool still exports both (as 0) instead of nothing.
namespace Platform.Core.Telemetry;

public static class RouterMetricNames
{
    /// <summary>Gauge: prompt tokens queued for prefill over every worker in the router's pool
    /// (per worker the larger of its last load report and the router's own not-yet-started prompts).</summary>
    public const string QueuedPrefillTokens = "platform_router_queued_prefill_tokens";

    /// <summary>Gauge in [0, 1]: KV blocks in use over KV blocks in total, over every worker in the pool
    /// (from their load reports; 0 with no worker).</summary>
    public const string KvUtilization = "platform_router_kv_utilization";

    /// <summary>Both series the autoscaler needs, in the order it reports missing ones.</summary>
    public static readonly IReadOnlyList<string> AutoscalerContract = [QueuedPrefillTokens, KvUtilization];
}
