// Runtime state of one worker as the router sees it (YARP's DestinationState):
// identity plus the few counters that change on every request. The worker's
// last load report is an immutable record swapped atomically; the router's own
// in-flight counters are updated with Interlocked, so placement reads them
// without locks. Whether a worker is in the pool at all is decided by the
// immutable WorkerPoolSnapshot, not by a flag here.
namespace Platform.Router.Policies;

/// <summary>The worker's own view of its load (from its last LoadReport).</summary>
/// <param name="Running">Sequences decoding or prefilling.</param>
/// <param name="Waiting">Sequences queued for admission.</param>
/// <param name="QueuedPrefillTokens">Prompt tokens admitted or queued but not yet computed.</param>
/// <param name="KvBlocksUsed">KV blocks referenced by live sequences.</param>
/// <param name="KvBlocksTotal">KV blocks the worker has.</param>
public sealed record WorkerLoad(int Running, int Waiting, long QueuedPrefillTokens, int KvBlocksUsed, int KvBlocksTotal)
{
    public static readonly WorkerLoad Idle = new(0, 0, 0, 0, 0);
}

public sealed class WorkerState
{
    private WorkerLoad _load = WorkerLoad.Idle;
    private int _inFlightRequests;
    private long _inFlightPrefillTokens;
    private long _breakerOpenUntilTicks;

    public WorkerState(string id)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        Id = id;
    }

    /// <summary>Stable identity: the worker's endpoint address.</summary>
    public string Id { get; }

    public WorkerLoad Load => Volatile.Read(ref _load);

    /// <summary>Requests this router has sent to the worker and not yet finished.</summary>
    public int InFlightRequests => Volatile.Read(ref _inFlightRequests);

    /// <summary>
    /// Prompt tokens this router sent to the worker whose first token has not come back yet:
    /// prefill the worker's last load report may not show yet.
    /// </summary>
    public long InFlightPrefillTokens => Interlocked.Read(ref _inFlightPrefillTokens);

    public void ReportLoad(WorkerLoad load) => Volatile.Write(ref _load, load ?? throw new ArgumentNullException(nameof(load)));

    /// <summary>Marks the worker unavailable to placement until <paramref name="until"/> (its breaker is open).</summary>
    public void BreakerOpened(DateTimeOffset until) => Interlocked.Exchange(ref _breakerOpenUntilTicks, until.UtcTicks);

    public void BreakerClosed() => Interlocked.Exchange(ref _breakerOpenUntilTicks, 0);

    public bool IsBreakerOpen(DateTimeOffset now) => now.UtcTicks < Interlocked.Read(ref _breakerOpenUntilTicks);

    /// <summary>Counts a request against this worker until the lease is disposed.</summary>
    public WorkerLease Lease(int prefillTokens)
    {
        Interlocked.Increment(ref _inFlightRequests);
        Interlocked.Add(ref _inFlightPrefillTokens, prefillTokens);
        return new WorkerLease(this, prefillTokens);
    }

    internal void Release(int pendingPrefill, bool request)
    {
        if (pendingPrefill != 0) Interlocked.Add(ref _inFlightPrefillTokens, -pendingPrefill);
        if (request) Interlocked.Decrement(ref _inFlightRequests);
    }

    public override string ToString() => Id;
}

/// <summary>
/// One request's claim on a worker's load counters. <see cref="PrefillDone"/> when the first
/// token arrives; Dispose when the request ends. Both are idempotent.
/// </summary>
public sealed class WorkerLease : IDisposable
{
    private readonly WorkerState _worker;
    private int _pendingPrefill;
    private int _disposed;

    internal WorkerLease(WorkerState worker, int prefillTokens)
    {
        _worker = worker;
        _pendingPrefill = prefillTokens;
    }

    public WorkerState Worker => _worker;

    /// <summary>The worker reported its prefill progress: only <paramref name="remaining"/> prompt tokens are still to compute.</summary>
    public void PrefillRemaining(int remaining)
    {
        while (true)
        {
            int pending = Volatile.Read(ref _pendingPrefill);
            if (remaining >= pending) return;
            if (Interlocked.CompareExchange(ref _pendingPrefill, remaining, pending) == pending)
            {
                _worker.Release(pending - remaining, request: false);
                return;
            }
        }
    }

    public void PrefillDone()
    {
        int pending = Interlocked.Exchange(ref _pendingPrefill, 0);
        _worker.Release(pending, request: false);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        int pending = Interlocked.Exchange(ref _pendingPrefill, 0);
        _worker.Release(pending, request: true);
    }
}
