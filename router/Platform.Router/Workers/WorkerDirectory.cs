// Every known worker connection by id, the pool of available ones (an
// immutable snapshot swapped on change), and the cluster identity the first
// worker established. Discovery sets the known addresses (static: once from
// --workers; Kubernetes: on every EndpointSlice change) and each addition or
// removal is queued for WorkerMonitor, which health-checks the known workers
// and is the only writer of the pool.
using System.Collections.Immutable;
using System.Threading.Channels;
using Platform.Core.Protos;
using Platform.Router.Configuration;
using Platform.Router.Policies;

namespace Platform.Router.Workers;

/// <summary>A worker address appeared in or disappeared from discovery.</summary>
public sealed record WorkerSetChange(WorkerConnection Connection, bool Added);

public sealed class WorkerDirectory : IDisposable
{
    private readonly int _maxMessageBytes;
    private readonly Lock _writeLock = new();
    private readonly Channel<WorkerSetChange> _changes = Channel.CreateUnbounded<WorkerSetChange>(new UnboundedChannelOptions { SingleReader = true });
    private ImmutableDictionary<string, WorkerConnection> _byId = ImmutableDictionary.Create<string, WorkerConnection>(StringComparer.Ordinal);
    private ClusterIdentity? _identity;

    public WorkerDirectory(RouterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _maxMessageBytes = options.MaxGrpcMessageBytes;
        if (!options.UsesKubernetes) SetAddresses(options.WorkerUris());
    }

    /// <summary>The workers discovery knows now (healthy or not), ordered by id.</summary>
    public IReadOnlyList<WorkerConnection> Connections => [.. Volatile.Read(ref _byId).Values.OrderBy(c => c.State.Id, StringComparer.Ordinal)];

    /// <summary>Additions and removals in the order they happened; WorkerMonitor is the one reader.
    /// A removed connection is the reader's to dispose once its in-flight requests are done.</summary>
    public ChannelReader<WorkerSetChange> Changes => _changes.Reader;

    /// <summary>
    /// Makes the known set exactly these addresses (by id = scheme-less authority): new ones get a
    /// connection, missing ones are removed. Returns whether anything changed.
    /// </summary>
    public bool SetAddresses(IEnumerable<Uri> addresses)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        var wanted = addresses.DistinctBy(Id).ToDictionary(Id, StringComparer.Ordinal);
        lock (_writeLock)
        {
            var current = _byId;
            var next = current;
            foreach (var (id, connection) in current)
            {
                if (wanted.ContainsKey(id)) continue;
                next = next.Remove(id);
                _changes.Writer.TryWrite(new WorkerSetChange(connection, Added: false));
            }
            foreach (var (id, address) in wanted)
            {
                if (current.ContainsKey(id)) continue;
                var connection = new WorkerConnection(address, _maxMessageBytes);
                next = next.Add(id, connection);
                _changes.Writer.TryWrite(new WorkerSetChange(connection, Added: true));
            }
            if (ReferenceEquals(next, current)) return false;
            Volatile.Write(ref _byId, next);
            return true;
        }

        static string Id(Uri u) => u.GetLeftPart(UriPartial.Authority);
    }

    public WorkerPool Pool { get; } = new();

    /// <summary>Fingerprint, block size, seed and name the pool agrees on; null until a worker answered GetInfo.</summary>
    public ClusterIdentity? Identity => Volatile.Read(ref _identity);

    /// <summary>The connection of this worker, or null when discovery has removed it since the snapshot was taken.</summary>
    public WorkerConnection? Find(WorkerState worker)
    {
        ArgumentNullException.ThrowIfNull(worker);
        return Volatile.Read(ref _byId).TryGetValue(worker.Id, out var c) && ReferenceEquals(c.State, worker) ? c : null;
    }

    /// <summary>Accepts a worker's GetInfo: establishes the identity or checks it. Returns why it is refused, or null.</summary>
    public string? Admit(WorkerInfo info)
    {
        var proposed = new ClusterIdentity(info);
        var current = Interlocked.CompareExchange(ref _identity, proposed, null) ?? proposed;
        return current.Disagreement(info);
    }

    public void Dispose()
    {
        _changes.Writer.TryComplete();
        foreach (var c in Volatile.Read(ref _byId).Values) c.Dispose();
    }
}
