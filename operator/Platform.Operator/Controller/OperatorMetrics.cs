// The operator's instruments on one Meter ("Platform.Operator"), exported at /metrics by
// OpenTelemetry's Prometheus exporter. Names follow Prometheus habits once exported
// (platform_operator_reconciles_total and so on).
using System.Diagnostics.Metrics;

namespace Platform.Operator.Controller;

public sealed class OperatorMetrics : IDisposable
{
    public const string MeterName = "Platform.Operator";
    private readonly Meter _meter;
    private readonly Counter<long> _reconciles;
    private readonly Histogram<double> _reconcileSeconds;
    private readonly Counter<long> _childWrites;
    private readonly Counter<long> _scaleChanges;
    private readonly Counter<long> _noReadings;
    private int _leader;
    private long _reconcileCount;

    public OperatorMetrics(IMeterFactory meters)
    {
        _meter = meters.Create(MeterName);
        _reconciles = _meter.CreateCounter<long>("platform_operator_reconciles", description: "Reconciles by result (success, error)");
        _reconcileSeconds = _meter.CreateHistogram<double>("platform_operator_reconcile_duration", unit: "s", description: "Reconcile duration");
        _childWrites = _meter.CreateCounter<long>("platform_operator_child_writes", description: "Creates and replaces of owned objects by kind and operation");
        _scaleChanges = _meter.CreateCounter<long>("platform_operator_autoscale_changes", description: "Replica changes made by the built-in autoscaler");
        _noReadings = _meter.CreateCounter<long>("platform_operator_autoscale_no_reading",
            description: "Autoscaler intervals without a load reading from the router, by reason (Unreachable, HttpError, MissingSeries); replicas are held then");
        _meter.CreateObservableGauge("platform_operator_leader", () => Volatile.Read(ref _leader), description: "1 while this replica holds the lease");
    }

    /// <summary>Reconciles started by this instance (tests use it to tell which replica acted).</summary>
    public long ReconcileCount => Interlocked.Read(ref _reconcileCount);

    public void ReconcileStarted() => Interlocked.Increment(ref _reconcileCount);

    public void Reconciled(string result, TimeSpan elapsed)
    {
        _reconciles.Add(1, new KeyValuePair<string, object?>("result", result));
        _reconcileSeconds.Record(elapsed.TotalSeconds);
    }

    public void ChildWritten(string kind, string operation) =>
        _childWrites.Add(1, new KeyValuePair<string, object?>("kind", kind), new KeyValuePair<string, object?>("operation", operation));

    public void Scaled() => _scaleChanges.Add(1);

    public void NoLoadReading(string reason) => _noReadings.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void SetLeader(bool leader) => Volatile.Write(ref _leader, leader ? 1 : 0);

    public void Dispose() => _meter.Dispose();
}
