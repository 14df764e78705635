// Traces and metrics of the worker. The metrics users' dashboards query keep vLLM's exact
// names, colons included (vllm:num_requests_running, vllm:time_to_first_token_seconds, ...;
// Platform.Core.Telemetry.VllmMetricNames). OpenTelemetry instrument names cannot contain ':',
// so those are prometheus-net metrics in a registry of this worker's own (one per worker, so
// in-process workers in one test process do not mix). prometheus-net 8 refuses ':' in names
// too, so they are registered as vllm_x and VllmExposition writes them back as vllm:x, ahead
// of the OpenTelemetry exporter's text on the same GET /metrics. OpenTelemetry keeps everything
// else (the worker's other gauges, the KV tier, runtime, ASP.NET Core) and the traces.
// Gauges and the prefix-cache and preemption counters read the engine's stats snapshot at
// scrape time; latency histograms and token counters are recorded by the Generate handler
// (queue and prefill time from the engine's times on a request's first token).
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using Platform.Core.Telemetry;
using Platform.Engine;
using Prometheus;

namespace Platform.Worker;

public static class WorkerTelemetry
{
    public const string SourceName = "Platform.Worker";
    public const string MeterName = "Platform.Worker";
    public static readonly ActivitySource Source = new(SourceName);
}

public sealed class WorkerMetrics
{
    // Seconds; TTFT spans a cached short prompt (ms) to a cold 1M-token prefill (minutes).
    private static readonly double[] TtftBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
    private static readonly double[] ItlBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
    private static readonly double[] E2eBuckets = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

    private readonly EngineHost _engines;
    private readonly string _modelName;
    private readonly KeyValuePair<string, object?> _model;
    private readonly Prometheus.Gauge.Child _running;
    private readonly Prometheus.Gauge.Child _waiting;
    private readonly Prometheus.Gauge.Child _kvUsage;
    private readonly Prometheus.Counter.Child _prefixQueries;
    private readonly Prometheus.Counter.Child _prefixHits;
    private readonly Prometheus.Counter.Child _preemptions;
    private readonly Prometheus.Histogram.Child _ttft;
    private readonly Prometheus.Histogram.Child _itl;
    private readonly Prometheus.Histogram.Child _e2e;
    private readonly Prometheus.Histogram.Child _queueTime;
    private readonly Prometheus.Histogram.Child _prefillTime;
    private readonly Prometheus.Counter.Child _promptTokens;
    private readonly Prometheus.Counter.Child _generationTokens;
    private readonly Prometheus.Counter _requests;

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "Meters made by IMeterFactory are owned and disposed by the factory (the host's container).")]
    public WorkerMetrics(IMeterFactory meterFactory, EngineHost engines, IOptions<WorkerOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _engines = engines;
        _modelName = options.Value.ResolvedServedModelName;
        _model = new(VllmMetricNames.ModelNameLabel, _modelName);

        // vLLM's names, through prometheus-net (a registry of this worker's own; no default process metrics).
        Registry = Metrics.NewCustomRegistry();
        var factory = Metrics.WithCustomRegistry(Registry);
        string[] model = [VllmMetricNames.ModelNameLabel];
        Prometheus.Gauge Gauge(string name, string help) => factory.CreateGauge(VllmExposition.RegisteredName(name), help, model);
        Prometheus.Counter Counter(string name, string help) => factory.CreateCounter(VllmExposition.RegisteredName(name), help, model);
        Prometheus.Histogram Histogram(string name, string help, double[] buckets) =>
            factory.CreateHistogram(VllmExposition.RegisteredName(name), help, new HistogramConfiguration { LabelNames = model, Buckets = buckets });
        _running = Gauge(VllmMetricNames.NumRequestsRunning, "Number of requests in the running batch.").WithLabels(_modelName);
        _waiting = Gauge(VllmMetricNames.NumRequestsWaiting, "Number of requests waiting to be scheduled.").WithLabels(_modelName);
        _kvUsage = Gauge(VllmMetricNames.KvCacheUsagePerc, "KV-cache usage. 1 means 100 percent usage.").WithLabels(_modelName);
        _prefixQueries = Counter(VllmMetricNames.PrefixCacheQueriesTotal, "Prefix cache queries, in terms of number of queried tokens (full blocks only).").WithLabels(_modelName);
        _prefixHits = Counter(VllmMetricNames.PrefixCacheHitsTotal, "Prefix cache hits, in terms of number of cached tokens.").WithLabels(_modelName);
        _preemptions = Counter(VllmMetricNames.NumPreemptionsTotal, "Cumulative number of preemptions from the engine.").WithLabels(_modelName);
        _ttft = Histogram(VllmMetricNames.TimeToFirstTokenSeconds, "Histogram of time to first token in seconds.", TtftBuckets).WithLabels(_modelName);
        _itl = Histogram(VllmMetricNames.InterTokenLatencySeconds, "Histogram of inter-token latency in seconds.", ItlBuckets).WithLabels(_modelName);
        _e2e = Histogram(VllmMetricNames.E2eRequestLatencySeconds, "Histogram of e2e request latency in seconds.", E2eBuckets).WithLabels(_modelName);
        // vLLM buckets these two like its e2e latency (request_latency_buckets).
        _queueTime = Histogram(VllmMetricNames.RequestQueueTimeSeconds, "Histogram of time spent in WAITING phase for request.", E2eBuckets).WithLabels(_modelName);
        _prefillTime = Histogram(VllmMetricNames.RequestPrefillTimeSeconds, "Histogram of time spent in PREFILL phase for request.", E2eBuckets).WithLabels(_modelName);
        _promptTokens = Counter(VllmMetricNames.PromptTokensTotal, "Number of prefill tokens processed.").WithLabels(_modelName);
        _generationTokens = Counter(VllmMetricNames.GenerationTokensTotal, "Number of generation tokens processed.").WithLabels(_modelName);
        _requests = factory.CreateCounter(VllmExposition.RegisteredName(VllmMetricNames.RequestSuccessTotal), "Count of successfully processed requests.",
            [VllmMetricNames.ModelNameLabel, VllmMetricNames.FinishedReasonLabel]);
        Registry.AddBeforeCollectCallback(ReadEngineSnapshot);

        // Everything without a vLLM name stays on OpenTelemetry.
        var meter = meterFactory.Create(WorkerTelemetry.MeterName);
        meter.CreateObservableGauge("platform.worker.queued_prefill_tokens", () => Stat(s => s.QueuedPrefillTokens), null,
            "Prompt tokens still to prefill.");
        meter.CreateObservableGauge("platform.dist_attention.lent_blocks", () => Dist(d => d.LentBlocks), "{block}",
            "KV blocks of this worker held for peers' sequences (DistAttention creditor).");
        meter.CreateObservableGauge("platform.dist_attention.borrowed_blocks", () => Dist(d => d.BorrowedBlocks), "{block}",
            "KV blocks this worker's sequences hold on peers (DistAttention debtor).");
        meter.CreateObservableGauge("platform.dist_attention.borrowing_sequences", () => Dist(d => d.BorrowingSequences), "{sequence}",
            "Sequences of this worker that keep part of their KV on peers.");
        meter.CreateObservableCounter("platform.dist_attention.served_attention_time",
            () => _engines.Lender is { } lender ? [new Measurement<double>(lender.AttendTime.TotalSeconds, _model)] : Array.Empty<Measurement<double>>(), "s",
            "Time this worker spent serving peers' attention over the blocks it lent (DistAttention creditor).");
        meter.CreateObservableCounter("platform.dist_attention.remote_attention_time", () => Dist(d => d.RemoteAttentionTime.TotalSeconds), "s",
            "Time finished DistAttention sequences waited for their peers' partial attention.");
        meter.CreateObservableCounter("platform.dist_attention.replans", () => Dist(d => d.Replans), "{segment}",
            "Segments of a failed creditor that this worker reserved on another peer, recomputing their KV, so the sequence went on.");
        meter.CreateObservableCounter("platform.dist_attention.recomputed_tokens", () => Dist(d => d.RecomputedTokens), "{token}",
            "Positions whose KV was computed again after their creditor failed.");
    }

    /// <summary>The prometheus-net registry holding the vllm: metrics (written by <see cref="VllmExposition"/>).</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>At scrape time: gauges and engine-side counters from the engine's stats snapshot.</summary>
    private void ReadEngineSnapshot()
    {
        if (_engines.Engine is not { } engine) return;
        var s = engine.GetStats();
        int blockSize = engine.Options.BlockSize;
        _running.Set(s.Running);
        _waiting.Set(s.Waiting);
        _kvUsage.Set(s.KvBlocksTotal == 0 ? 0 : (double)s.KvBlocksUsed / s.KvBlocksTotal);
        _prefixQueries.IncTo(s.PrefixQueriedBlocks * blockSize);
        _prefixHits.IncTo(s.PrefixHitBlocks * blockSize);
        _preemptions.IncTo(s.Preemptions);
    }

    private IEnumerable<Measurement<double>> Dist(Func<DistAttentionStats, double> read) =>
        _engines.Engine is { } engine ? [new Measurement<double>(read(engine.GetDistAttentionStats()), _model)] : [];

    private IEnumerable<Measurement<double>> Stat(Func<EngineStats, double> read) =>
        _engines.Engine is { } engine ? [new Measurement<double>(read(engine.GetStats()), _model)] : [];

    public void FirstToken(TimeSpan sinceStart) => _ttft.Observe(sinceStart.TotalSeconds);

    /// <summary>At a request's first token: its time queued (arrival to first scheduled) and prefilling (to the first token).</summary>
    public void Phases(TimeSpan queue, TimeSpan prefill)
    {
        _queueTime.Observe(Math.Max(0, queue.TotalSeconds));
        _prefillTime.Observe(Math.Max(0, prefill.TotalSeconds));
    }

    public void NextToken(TimeSpan sincePrevious) => _itl.Observe(sincePrevious.TotalSeconds);

    public void GeneratedTokens(int count) => _generationTokens.Inc(count);

    public void Finished(string finishReason, int promptTokens, TimeSpan elapsed)
    {
        _promptTokens.Inc(promptTokens);
        _e2e.Observe(elapsed.TotalSeconds);
        _requests.WithLabels(_modelName, finishReason).Inc();
    }
}
