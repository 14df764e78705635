// OpenTelemetry instruments of the KV tier (meter "Platform.KvCache"; the
// worker exports it next to its own). Counters say what each tier served,
// wrote, rejected (corrupt, truncated or foreign blocks) and how the remote
// store behaves (errors, timeouts, skips while the breaker is open).
using System.Diagnostics.Metrics;

namespace Platform.KvCache;

public sealed class KvTierMetrics : IDisposable
{
    public const string MeterName = "Platform.KvCache";
    private readonly Meter _meter;
    private readonly Counter<long> _hitBlocks;
    private readonly Counter<long> _writtenBlocks;
    private readonly Counter<long> _rejected;
    private readonly Counter<long> _dropped;
    private readonly Counter<long> _remoteErrors;
    private readonly Counter<long> _remoteSkipped;
    private readonly Counter<long> _breakerTransitions;
    private readonly Histogram<double> _fetchSeconds;

    public KvTierMetrics()
    {
        _meter = new Meter(MeterName);
        _hitBlocks = _meter.CreateCounter<long>("kv_tier_hit_blocks", "{block}", "Prompt blocks served from a tier instead of being computed, by tier (device, host, remote)");
        _writtenBlocks = _meter.CreateCounter<long>("kv_tier_written_blocks", "{block}", "Blocks written to a tier (host, remote)");
        _rejected = _meter.CreateCounter<long>("kv_tier_rejected_blocks", "{block}", "Stored blocks ignored and recomputed: corrupt, truncated, foreign or mismatched (by tier and reason)");
        _dropped = _meter.CreateCounter<long>("kv_tier_write_dropped_blocks", "{block}", "Blocks not written because the write queue was full or the block too large");
        _remoteErrors = _meter.CreateCounter<long>("kv_tier_remote_errors", "{operation}", "Remote store operations that failed or timed out (by op and kind)");
        _remoteSkipped = _meter.CreateCounter<long>("kv_tier_remote_skipped", "{operation}", "Remote operations skipped because the circuit breaker is open");
        _breakerTransitions = _meter.CreateCounter<long>("kv_tier_remote_breaker_transitions", "{transition}", "Circuit breaker state changes of the remote store (opened, closed, half_open)");
        _fetchSeconds = _meter.CreateHistogram<double>("kv_tier_remote_fetch_duration", "s", "Time to fetch a prompt's prefix from the remote store",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] });
    }

    public Meter Meter => _meter;

    public void Hit(string tier, long blocks) { if (blocks > 0) _hitBlocks.Add(blocks, new KeyValuePair<string, object?>("tier", tier)); }
    public void Written(string tier, long blocks) { if (blocks > 0) _writtenBlocks.Add(blocks, new KeyValuePair<string, object?>("tier", tier)); }
    public void Rejected(string tier, DecodeStatus reason) =>
        _rejected.Add(1, new KeyValuePair<string, object?>("tier", tier), new KeyValuePair<string, object?>("reason", reason.ToString()));
    public void Dropped(string reason) => _dropped.Add(1, new KeyValuePair<string, object?>("reason", reason));
    public void RemoteError(string op, string kind) =>
        _remoteErrors.Add(1, new KeyValuePair<string, object?>("op", op), new KeyValuePair<string, object?>("kind", kind));
    public void RemoteSkipped(string op) => _remoteSkipped.Add(1, new KeyValuePair<string, object?>("op", op));
    public void BreakerTransition(string state) => _breakerTransitions.Add(1, new KeyValuePair<string, object?>("state", state));
    public void FetchDuration(double seconds) => _fetchSeconds.Record(seconds);

    /// <summary>Registers a gauge read on collection (host bytes, breaker state, queue depth).</summary>
    public void Gauge(string name, string unit, string description, Func<long> read) =>
        _meter.CreateObservableGauge(name, read, unit, description);

    public void Dispose() => _meter.Dispose();
}
