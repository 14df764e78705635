// Traces and metrics of the worker. Metric names follow vLLM's (vllm:num_requests_running,
// vllm:time_to_first_token_seconds, ...) as far as OpenTelemetry allows: instrument names
// cannot contain ':', so they use '.', which the Prometheus exporter turns into '_'
// (vllm_num_requests_running, vllm_time_to_first_token_seconds, vllm_prompt_tokens_total).
// Gauges and the prefix-cache counters read the engine's stats snapshot at scrape time;
// latency histograms and token counters are recorded by the Generate handler.
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using Platform.Engine;

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
    private readonly KeyValuePair<string, object?> _model;
    private readonly Histogram<double> _ttft;
    private readonly Histogram<double> _itl;
    private readonly Histogram<double> _e2e;
    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _generationTokens;
    private readonly Counter<long> _requests;

    public WorkerMetrics(IMeterFactory meterFactory, EngineHost engines, IOptions<WorkerOptions> options)
    {
        _engines = engines;
        _model = new("model_name", options.Value.ResolvedServedModelName);
        var meter = meterFactory.Create(WorkerTelemetry.MeterName);

        meter.CreateObservableGauge("vllm.num_requests_running", () => Gauge(s => s.Running), "{request}", "Requests in the running batch.");
        meter.CreateObservableGauge("vllm.num_requests_waiting", () => Gauge(s => s.Waiting), "{request}", "Requests waiting to be scheduled.");
        meter.CreateObservableGauge("vllm.kv_cache_usage_perc", () => Gauge(s => s.KvBlocksTotal == 0 ? 0 : (double)s.KvBlocksUsed / s.KvBlocksTotal), null,
            "Fraction of KV cache blocks in use by requests (1 = full).");
        meter.CreateObservableGauge("vllm.num_queued_prefill_tokens", () => Gauge(s => s.QueuedPrefillTokens), "{token}", "Prompt tokens still to prefill.");
        meter.CreateObservableCounter("vllm.prefix_cache_queries", () => Count(s => s.PrefixQueriedBlocks * BlockSize()), "{token}",
            "Prompt tokens looked up in the prefix cache (full blocks only).");
        meter.CreateObservableCounter("vllm.prefix_cache_hits", () => Count(s => s.PrefixHitBlocks * BlockSize()), "{token}",
            "Prompt tokens found in the prefix cache.");
        meter.CreateObservableCounter("vllm.num_preemptions", () => Count(s => s.Preemptions), "{preemption}", "Requests preempted for lack of KV blocks.");
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

        _ttft = meter.CreateHistogram("vllm.time_to_first_token", "s", "Time from the Generate call to its first token.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TtftBuckets });
        _itl = meter.CreateHistogram("vllm.inter_token_latency", "s", "Time between consecutive output tokens of a request.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = ItlBuckets });
        _e2e = meter.CreateHistogram("vllm.e2e_request_latency", "s", "Time from the Generate call to its last chunk.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = E2eBuckets });
        _promptTokens = meter.CreateCounter<long>("vllm.prompt_tokens", "{token}", "Prompt tokens of finished requests.");
        _generationTokens = meter.CreateCounter<long>("vllm.generation_tokens", "{token}", "Tokens generated.");
        _requests = meter.CreateCounter<long>("vllm.request_success", "{request}", "Requests that ended, by finished_reason.");
    }

    private IEnumerable<Measurement<double>> Dist(Func<DistAttentionStats, double> read) =>
        _engines.Engine is { } engine ? [new Measurement<double>(read(engine.GetDistAttentionStats()), _model)] : [];

    private int BlockSize() => _engines.Engine?.Options.BlockSize ?? 0;

    private IEnumerable<Measurement<double>> Gauge(Func<EngineStats, double> read) =>
        _engines.Engine is { } engine ? [new Measurement<double>(read(engine.GetStats()), _model)] : [];

    private IEnumerable<Measurement<long>> Count(Func<EngineStats, long> read) =>
        _engines.Engine is { } engine ? [new Measurement<long>(read(engine.GetStats()), _model)] : [];

    public void FirstToken(TimeSpan sinceStart) => _ttft.Record(sinceStart.TotalSeconds, _model);

    public void NextToken(TimeSpan sincePrevious) => _itl.Record(sincePrevious.TotalSeconds, _model);

    public void GeneratedTokens(int count) => _generationTokens.Add(count, _model);

    public void Finished(string finishReason, int promptTokens, TimeSpan elapsed)
    {
        _promptTokens.Add(promptTokens, _model);
        _e2e.Record(elapsed.TotalSeconds, _model);
        _requests.Add(1, _model, new KeyValuePair<string, object?>("finished_reason", finishReason));
    }
}
