// Every configured worker connection by id, the pool of available ones (an
// immutable snapshot swapped on change), and the cluster identity the first
// worker established. Health checking (WorkerMonitor) is the only writer.
using Platform.Core.Protos;
using Platform.Router.Configuration;
using Platform.Router.Forwarding;
using Platform.Router.Policies;
using Polly;
using Polly.CircuitBreaker;

namespace Platform.Router.Workers;

public sealed class WorkerDirectory : IDisposable
{
    private readonly Dictionary<string, WorkerConnection> _byId;
    private ClusterIdentity? _identity;

    public WorkerDirectory(RouterOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        var breakDuration = TimeSpan.FromMilliseconds(options.BreakerBreakMs);
        ResiliencePipeline<AttemptResult> Breaker(WorkerState state) =>
            new ResiliencePipelineBuilder<AttemptResult> { TimeProvider = timeProvider }
                .AddCircuitBreaker(new CircuitBreakerStrategyOptions<AttemptResult>
                {
                    FailureRatio = options.BreakerFailureRatio,
                    MinimumThroughput = options.BreakerMinimumThroughput,
                    SamplingDuration = TimeSpan.FromMilliseconds(options.BreakerSamplingMs),
                    BreakDuration = breakDuration,
                    ShouldHandle = args => ValueTask.FromResult(
                        args.Outcome.Exception is not null and not OperationCanceledException ||
                        args.Outcome.Result is { } r && ForwarderErrors.CountsAgainstWorker(r.Error)),
                    // Placement skips a worker while its breaker is open; after the break one request probes it.
                    OnOpened = args =>
                    {
                        state.BreakerOpened(timeProvider.GetUtcNow() + args.BreakDuration);
                        return ValueTask.CompletedTask;
                    },
                    OnClosed = _ =>
                    {
                        state.BreakerClosed();
                        return ValueTask.CompletedTask;
                    },
                })
                .Build();

        var connections = options.WorkerUris().Select(u => new WorkerConnection(u, options.MaxGrpcMessageBytes, Breaker)).ToList();
        _byId = connections.GroupBy(c => c.State.Id, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        Connections = [.. _byId.Values];
    }

    public IReadOnlyList<WorkerConnection> Connections { get; }

    public WorkerPool Pool { get; } = new();

    /// <summary>Fingerprint, block size, seed and name the pool agrees on; null until a worker answered GetInfo.</summary>
    public ClusterIdentity? Identity => Volatile.Read(ref _identity);

    public WorkerConnection? Find(string id) => _byId.GetValueOrDefault(id);

    /// <summary>Accepts a worker's GetInfo: establishes the identity or checks it. Returns why it is refused, or null.</summary>
    public string? Admit(WorkerInfo info)
    {
        var proposed = new ClusterIdentity(info);
        var current = Interlocked.CompareExchange(ref _identity, proposed, null) ?? proposed;
        return current.Disagreement(info);
    }

    public void Dispose()
    {
        foreach (var c in Connections) c.Dispose();
    }
}
