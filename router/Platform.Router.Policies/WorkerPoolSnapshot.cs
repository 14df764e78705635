// The set of workers placement may choose from, as an immutable snapshot that
// discovery and health checking replace atomically (YARP's
// ClusterDestinationsState). The request path reads WorkerPool.Current once and
// works on that snapshot; no lock is ever taken on the request path.
namespace Platform.Router.Policies;

public sealed class WorkerPoolSnapshot
{
    public static readonly WorkerPoolSnapshot Empty = new([], 0);

    public WorkerPoolSnapshot(IReadOnlyList<WorkerState> available, long version)
    {
        Available = available;
        Version = version;
    }

    /// <summary>Workers that answered their last health check and agree on the model.</summary>
    public IReadOnlyList<WorkerState> Available { get; }

    /// <summary>Increases with every swap (diagnostics and tests).</summary>
    public long Version { get; }
}

/// <summary>Holds the current snapshot; writers build a new one and swap it in.</summary>
public sealed class WorkerPool
{
    private WorkerPoolSnapshot _current = WorkerPoolSnapshot.Empty;
    private readonly Lock _writeLock = new();

    public WorkerPoolSnapshot Current => Volatile.Read(ref _current);

    /// <summary>Adds a worker (no-op if present). Writers serialize; readers never wait.</summary>
    public bool Add(WorkerState worker)
    {
        ArgumentNullException.ThrowIfNull(worker);
        lock (_writeLock)
        {
            var current = _current;
            if (current.Available.Any(w => w.Id == worker.Id)) return false;
            var next = current.Available.Append(worker).OrderBy(w => w.Id, StringComparer.Ordinal).ToArray();
            Volatile.Write(ref _current, new WorkerPoolSnapshot(next, current.Version + 1));
            return true;
        }
    }

    /// <summary>Replaces the whole set at once (discovery that lists every worker, e.g. Kubernetes endpoints).</summary>
    public void Replace(IEnumerable<WorkerState> workers)
    {
        ArgumentNullException.ThrowIfNull(workers);
        var next = workers.DistinctBy(w => w.Id).OrderBy(w => w.Id, StringComparer.Ordinal).ToArray();
        lock (_writeLock) Volatile.Write(ref _current, new WorkerPoolSnapshot(next, _current.Version + 1));
    }

    /// <summary>Removes a worker by id (no-op if absent).</summary>
    public bool Remove(string workerId)
    {
        lock (_writeLock)
        {
            var current = _current;
            if (!current.Available.Any(w => w.Id == workerId)) return false;
            var next = current.Available.Where(w => w.Id != workerId).ToArray();
            Volatile.Write(ref _current, new WorkerPoolSnapshot(next, current.Version + 1));
            return true;
        }
    }
}
