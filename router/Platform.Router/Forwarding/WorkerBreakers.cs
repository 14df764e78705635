// One circuit breaker per worker connection (Polly), made on first use and
// dropped with the connection. Forwarding owns it, beside the retry, because
// what counts against a worker is a forwarding outcome (ForwarderErrors.
// CountsAgainstWorker); the breaker's state reaches placement only through
// WorkerState (BreakerOpened/BreakerClosed), so Workers knows nothing of it.
using System.Runtime.CompilerServices;
using Platform.Router.Configuration;
using Platform.Router.Policies;
using Platform.Router.Workers;
using Polly;
using Polly.CircuitBreaker;

namespace Platform.Router.Forwarding;

public sealed class WorkerBreakers
{
    private readonly ConditionalWeakTable<WorkerConnection, ResiliencePipeline<AttemptResult>> _byConnection = [];
    private readonly RouterOptions _options;
    private readonly TimeProvider _time;

    public WorkerBreakers(RouterOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        _options = options;
        _time = time;
    }

    /// <summary>The breaker of this connection (a connection re-added by discovery is a new one, with a fresh breaker).</summary>
    public ResiliencePipeline<AttemptResult> For(WorkerConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        return _byConnection.GetValue(connection, c => Build(c.State));
    }

    private ResiliencePipeline<AttemptResult> Build(WorkerState state) =>
        new ResiliencePipelineBuilder<AttemptResult> { TimeProvider = _time }
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions<AttemptResult>
            {
                FailureRatio = _options.BreakerFailureRatio,
                MinimumThroughput = _options.BreakerMinimumThroughput,
                SamplingDuration = TimeSpan.FromMilliseconds(_options.BreakerSamplingMs),
                BreakDuration = TimeSpan.FromMilliseconds(_options.BreakerBreakMs),
                ShouldHandle = args => ValueTask.FromResult(
                    args.Outcome.Exception is not null and not OperationCanceledException ||
                    args.Outcome.Result is { } r && ForwarderErrors.CountsAgainstWorker(r.Error)),
                // Placement skips a worker while its breaker is open; after the break one request probes it.
                OnOpened = args =>
                {
                    state.BreakerOpened(_time.GetUtcNow() + args.BreakDuration);
                    return ValueTask.CompletedTask;
                },
                OnClosed = _ =>
                {
                    state.BreakerClosed();
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
}
