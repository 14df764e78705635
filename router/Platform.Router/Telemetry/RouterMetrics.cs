// The router's meters and activity source (System.Diagnostics, exported by the
// OpenTelemetry SDK as Prometheus text at /metrics). Names follow the peers'
// habit of a component prefix; tags are low-cardinality (policy, worker
// address, outcome), never request ids. Two gauges are the autoscaler's contract
// with the operator and are named from Core's RouterMetricNames, not here.
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Platform.Core.Protos;
using Platform.Core.Telemetry;
using Platform.Router.Policies;

namespace Platform.Router.Telemetry;

public sealed class RouterMetrics : IDisposable
{
    public const string MeterName = "Platform.Router";
    public static readonly ActivitySource ActivitySource = new(MeterName);

    // Seconds. Router work is sub-millisecond (goal: < 1 ms p99); model latencies span ms to minutes.
    private static readonly double[] OverheadBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];
    // A first token spans a cached short prompt (ms) to a million-token prefill (many minutes).
    private static readonly double[] LatencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

    private readonly Meter _meter;
    private readonly Counter<long> _requests;
    private readonly Counter<long> _placements;
    private readonly Counter<long> _cachedBlocks;
    private readonly Counter<long> _retries;
    private readonly Counter<long> _kvResyncs;
    private readonly Counter<long> _workerFailures;
    private readonly Counter<long> _migrations;
    private readonly Counter<long> _migrationFailures;
    private readonly Counter<long> _migratedTokens;
    private readonly Counter<long> _migrationCachedTokens;
    private readonly Counter<long> _migrationRecomputedTokens;
    private readonly Histogram<double> _migrationGap;
    private readonly Histogram<double> _ttft;
    private readonly Histogram<double> _prefillSeconds;
    private readonly Histogram<double> _placementSeconds;
    private readonly Histogram<double> _overheadSeconds;
    private readonly UpDownCounter<long> _inFlight;

    public RouterMetrics(IMeterFactory meterFactory, WorkerPool pool, PrefixIndex index)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _meter = meterFactory.Create(MeterName);
        _requests = _meter.CreateCounter<long>("router.requests", description: "HTTP generation requests by route and status code");
        _placements = _meter.CreateCounter<long>("router.placements", description: "Placement decisions by policy, worker and reason");
        _cachedBlocks = _meter.CreateCounter<long>("router.placement.overlap_blocks", description: "Prompt blocks the index said the chosen worker held");
        _retries = _meter.CreateCounter<long>("router.retries", description: "Attempts retried on another worker, by the failed worker");
        _kvResyncs = _meter.CreateCounter<long>("router.kv_index.resyncs", description: "KV event resubscriptions by worker and reason");
        _workerFailures = _meter.CreateCounter<long>("router.worker.failures", description: "Failed worker attempts by worker and gRPC status");
        _migrations = _meter.CreateCounter<long>("router.migrations", description: "Requests moved to another worker mid-stream, by the failure that moved them");
        _migrationFailures = _meter.CreateCounter<long>("router.migration.failures", description: "Mid-stream failures no other worker could take over, by failure");
        _migratedTokens = _meter.CreateCounter<long>("router.migration.generated_tokens", description: "Tokens already generated when requests moved (re-prefilled by the next worker)");
        _migrationCachedTokens = _meter.CreateCounter<long>("router.migration.cached_tokens", description: "Prompt tokens the next worker found cached when a request moved");
        _migrationRecomputedTokens = _meter.CreateCounter<long>("router.migration.recomputed_tokens",
            description: "Tokens the next worker had to compute again when requests moved (prompt + generated, less what it found cached), by reason");
        _migrationGap = _meter.CreateHistogram<double>("router.migration.gap", unit: "s", description: "Time from a worker's failure to the next worker's first token",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _ttft = _meter.CreateHistogram<double>("router.time_to_first_token", unit: "s", description: "Time from sending to a worker to its first token",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _prefillSeconds = _meter.CreateHistogram<double>("router.prefill.duration", unit: "s",
            description: "Time from sending to a worker to its first token, for requests whose worker reported prefill progress (long prompts)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _placementSeconds = _meter.CreateHistogram<double>("router.placement.duration", unit: "s", description: "Time the placement policy took to choose a worker",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = OverheadBuckets });
        _overheadSeconds = _meter.CreateHistogram<double>("router.overhead", unit: "s",
            description: "Time from the request's arrival to its call to a worker (parse, tokenize, hash, place)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = OverheadBuckets });
        _inFlight = _meter.CreateUpDownCounter<long>("router.requests.in_flight", description: "Generation requests in progress");
        _meter.CreateObservableGauge("router.workers.available", () => pool.Current.Available.Count, description: "Workers in the pool");
        _meter.CreateObservableGauge("router.prefill.tokens_in_flight", () => InFlightPrefillTokens(pool.Current),
            description: "Prompt tokens this router sent to workers that are not prefilled yet (shrinks with the workers' progress reports)");
        _meter.CreateObservableGauge("router.kv_index.blocks", () => index.BlockCount, description: "Distinct KV blocks in the prefix index");
        // The operator's autoscaler reads these two (docs/operator.md); no unit, so the exporter keeps the names as they are.
        _meter.CreateObservableGauge(RouterMetricNames.QueuedPrefillTokens, () => QueuedPrefillTokens(pool.Current),
            description: "Prompt tokens queued for prefill over the workers in the pool (autoscaler contract)");
        _meter.CreateObservableGauge(RouterMetricNames.KvUtilization, () => KvUtilization(pool.Current),
            description: "KV blocks in use / KV blocks in total over the workers in the pool, 0..1 (autoscaler contract)");
    }

    /// <summary>Per worker the larger of its last report and the prompts this router sent it that have no
    /// first token yet (the report lags by up to a health period), summed over the pool.</summary>
    public static long QueuedPrefillTokens(WorkerPoolSnapshot pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        long sum = 0;
        foreach (var w in pool.Available) sum += Math.Max(w.Load.QueuedPrefillTokens, w.InFlightPrefillTokens);
        return sum;
    }

    /// <summary>Σ over the pool of the prompt tokens this router has in prefill (per the workers' progress reports).</summary>
    public static long InFlightPrefillTokens(WorkerPoolSnapshot pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        long sum = 0;
        foreach (var w in pool.Available) sum += w.InFlightPrefillTokens;
        return sum;
    }

    /// <summary>Σ blocks used / Σ blocks in total over the pool's last load reports; 0 when nothing is known.</summary>
    public static double KvUtilization(WorkerPoolSnapshot pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        long used = 0, total = 0;
        foreach (var w in pool.Available)
        {
            var load = w.Load;
            used += load.KvBlocksUsed;
            total += load.KvBlocksTotal;
        }
        return total == 0 ? 0 : Math.Clamp((double)used / total, 0, 1);
    }

    public void Request(string route, int status) =>
        _requests.Add(1, new KeyValuePair<string, object?>("route", route), new KeyValuePair<string, object?>("code", status));

    public void Placed(string policy, PlacementResult result)
    {
        var worker = new KeyValuePair<string, object?>("worker", result.Worker?.Id ?? "none");
        _placements.Add(1, new KeyValuePair<string, object?>("policy", policy), worker, new KeyValuePair<string, object?>("reason", result.Reason.ToString()));
        if (result.OverlapBlocks > 0) _cachedBlocks.Add(result.OverlapBlocks, new KeyValuePair<string, object?>("policy", policy), worker);
    }

    public void Retried(string worker) => _retries.Add(1, new KeyValuePair<string, object?>("worker", worker));

    public void WorkerFailed(string worker, string status) =>
        _workerFailures.Add(1, new KeyValuePair<string, object?>("worker", worker), new KeyValuePair<string, object?>("status", status));

    public void KvResync(string worker, string reason) =>
        _kvResyncs.Add(1, new KeyValuePair<string, object?>("worker", worker), new KeyValuePair<string, object?>("reason", reason));

    public void FirstToken(TimeSpan elapsed) => _ttft.Record(elapsed.TotalSeconds);

    /// <param name="promptTokens">The original prompt's length: the next worker prefills it plus the generated tokens, less what it finds cached.</param>
    public void Migrated(string reason, int promptTokens, int generatedTokens, TimeSpan gap, CachedTokens? cached)
    {
        var tag = new KeyValuePair<string, object?>("reason", reason);
        _migrations.Add(1, tag);
        _migratedTokens.Add(generatedTokens);
        int cachedTokens = cached is null ? 0 : cached.Device + cached.Host + cached.Remote;
        _migrationCachedTokens.Add(cachedTokens);
        _migrationRecomputedTokens.Add(Math.Max(0, promptTokens + generatedTokens - cachedTokens), tag);
        _migrationGap.Record(gap.TotalSeconds, tag);
    }

    public void MigrationFailed(string reason) => _migrationFailures.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void Prefill(TimeSpan elapsed) => _prefillSeconds.Record(elapsed.TotalSeconds);

    public void PlacementTime(TimeSpan elapsed) => _placementSeconds.Record(elapsed.TotalSeconds);

    public void Overhead(TimeSpan elapsed) => _overheadSeconds.Record(elapsed.TotalSeconds);

    public void InFlight(int delta) => _inFlight.Add(delta);

    public void Dispose() => _meter.Dispose();
}
