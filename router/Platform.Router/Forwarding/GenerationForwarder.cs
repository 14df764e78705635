// Starts a generation on a worker: place, call Generate, wait for the first
// chunk. Until that first chunk arrives nothing has reached the client, so a
// failure is retried on a different worker (Polly retry: bounded, exponential
// backoff with jitter), each attempt passing through that worker's circuit
// breaker. A request the worker rejects as invalid is never retried; a client
// disconnect stops everything. Once the first chunk is in, the stream belongs
// to the caller (see WorkerStream).
using System.Diagnostics;
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Router.Configuration;
using Platform.Router.Policies;
using Platform.Router.Telemetry;
using Platform.Router.Workers;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;

namespace Platform.Router.Forwarding;

public sealed partial class GenerationForwarder
{
    private static readonly ResiliencePropertyKey<AttemptState> StateKey = new("router.attempt");

    private readonly WorkerDirectory _workers;
    private readonly IPlacementPolicy _policy;
    private readonly RouterMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly RouterOptions _options;
    private readonly ILogger<GenerationForwarder> _logger;
    private readonly ResiliencePipeline<AttemptResult> _retry;
    private readonly WorkerBreakers _breakers;

    public GenerationForwarder(WorkerDirectory workers, IPlacementPolicy policy, RouterMetrics metrics, TimeProvider time,
        RouterOptions options, ILogger<GenerationForwarder> logger)
    {
        _workers = workers;
        _policy = policy;
        _metrics = metrics;
        _time = time;
        _options = options;
        _logger = logger;
        _breakers = new WorkerBreakers(options, time);
        var builder = new ResiliencePipelineBuilder<AttemptResult> { TimeProvider = time };
        if (options.MaxRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions<AttemptResult>
            {
                MaxRetryAttempts = options.MaxRetries,
                Delay = TimeSpan.FromMilliseconds(options.RetryBaseDelayMs),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Result is { Retryable: true }),
                OnRetry = args =>
                {
                    _metrics.Retried(args.Outcome.Result?.WorkerId ?? "none");
                    LogRetry(_logger, args.Outcome.Result?.WorkerId, args.Outcome.Result?.Error, args.Outcome.Result?.Message);
                    return ValueTask.CompletedTask;
                },
            });
        }
        _retry = builder.Build();
    }

    public string PolicyName => _policy.Name;

    /// <summary>Places and starts the request; never throws for expected failures (see <see cref="ForwarderError"/>).</summary>
    /// <param name="arrived">The request's arrival (TimeProvider timestamp), for the router-overhead histogram.</param>
    public async Task<AttemptResult> StartAsync(GenerateRequest request, PlacementRequest placement, long arrived, CancellationToken cancellationToken)
    {
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        var state = new AttemptState(request, placement, arrived, cancellationToken);
        context.Properties.Set(StateKey, state);
        try
        {
            var outcome = await _retry.ExecuteOutcomeAsync(static (ctx, self) => self.AttemptAsync(ctx), context, this).ConfigureAwait(false);
            if (outcome.Exception is OperationCanceledException || cancellationToken.IsCancellationRequested)
            {
                outcome.Result?.Stream?.Dispose();
                return AttemptResult.Failed(ForwarderError.Canceled, "client disconnected");
            }
            if (outcome.Exception is { } e)
            {
                LogUnexpected(_logger, e);
                return AttemptResult.Failed(ForwarderError.WorkerFailed, "internal error while starting the request");
            }
            return outcome.Result!;
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    private sealed class AttemptState(GenerateRequest request, PlacementRequest placement, long arrived, CancellationToken clientAborted)
    {
        public long Arrived { get; } = arrived;
        public GenerateRequest Request { get; } = request;
        public PlacementRequest Placement { get; } = placement;
        public CancellationToken ClientAborted { get; } = clientAborted;
        public HashSet<string> Tried { get; } = new(StringComparer.Ordinal);
        public AttemptResult? LastFailure { get; set; }
    }

    private async ValueTask<Outcome<AttemptResult>> AttemptAsync(ResilienceContext context)
    {
        var state = context.Properties.GetValue(StateKey, null!);
        var now = _time.GetUtcNow();
        var candidates = _workers.Pool.Current.Available.Where(w => !state.Tried.Contains(w.Id) && !w.IsBreakerOpen(now)).ToList();
        if (candidates.Count == 0)
        {
            // Nothing left to try: the last failure is the answer (not retryable any more), or "no workers".
            var last = state.LastFailure;
            return Outcome.FromResult(last is null
                ? AttemptResult.Final(ForwarderError.NoWorkers, "no worker is available; try again when a worker is ready")
                : AttemptResult.Final(last.Error == ForwarderError.NotReady ? ForwarderError.NoWorkers : last.Error, last.Message, last.WorkerId));
        }

        long start = _time.GetTimestamp();
        var placed = _policy.Place(state.Placement, candidates);
        _metrics.PlacementTime(_time.GetElapsedTime(start));
        _metrics.Placed(_policy.Name, placed);
        var worker = placed.Worker!;
        state.Tried.Add(worker.Id);
        Activity.Current?.SetTag("router.worker", worker.Id);
        Activity.Current?.SetTag("router.overlap_blocks", placed.OverlapBlocks);
        LogPlaced(_logger, worker.Id, _policy.Name, placed.Reason, placed.OverlapBlocks, placed.Cost);

        if (_workers.Find(worker) is not { } connection)
        {
            // Discovery removed it after the snapshot was read: try another worker.
            state.LastFailure = AttemptResult.Failed(ForwarderError.Unreachable, $"worker {worker.Id} left the pool", worker.Id);
            return Outcome.FromResult(state.LastFailure);
        }
        var outcome = await _breakers.For(connection).ExecuteOutcomeAsync(
            static (ctx, s) => s.Self.StartOnWorkerAsync(s.Connection, s.State, s.Placed),
            context, (Self: this, Connection: connection, State: state, Placed: placed)).ConfigureAwait(false);

        AttemptResult result;
        if (outcome.Exception is BrokenCircuitException)
            result = AttemptResult.Failed(ForwarderError.Unreachable, $"worker {worker.Id} is failing (circuit open)", worker.Id);
        else if (outcome.Exception is OperationCanceledException)
            return outcome;
        else if (outcome.Exception is { } e)
        {
            LogUnexpected(_logger, e);
            result = AttemptResult.Failed(ForwarderError.WorkerFailed, $"worker {worker.Id} failed: {e.Message}", worker.Id);
        }
        else result = outcome.Result!;

        if (result.Error != ForwarderError.None)
        {
            state.LastFailure = result;
            if (result.Error != ForwarderError.Canceled) _metrics.WorkerFailed(worker.Id, result.Error.ToString());
        }
        return Outcome.FromResult(result);
    }

    private async ValueTask<Outcome<AttemptResult>> StartOnWorkerAsync(WorkerConnection connection, AttemptState state, PlacementResult placed)
    {
        var placement = state.Placement;
        int prefillEstimate = Math.Max(0, placement.PromptTokens - placed.OverlapBlocks * placement.BlockSize);
        var lease = connection.State.Lease(prefillEstimate);
        var timeout = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        var linked = CancellationTokenSource.CreateLinkedTokenSource(state.ClientAborted, timeout.Token);
        AsyncServerStreamingCall<GenerateChunk>? call = null;
        long start = _time.GetTimestamp();
        try
        {
            timeout.CancelAfter(TimeSpan.FromMilliseconds(_options.FirstTokenTimeoutMs));
            if (state.Tried.Count == 1) _metrics.Overhead(_time.GetElapsedTime(state.Arrived));
            call = connection.Client.Generate(state.Request, cancellationToken: linked.Token);
            if (!await call.ResponseStream.MoveNext(CancellationToken.None).ConfigureAwait(false))
                return Fail(ForwarderError.WorkerFailed, $"worker {connection.State.Id} closed the stream before the first token");
            var first = call.ResponseStream.Current;
            if (first.FinishReason == FinishReason.Error)
                return Fail(ForwarderError.WorkerFailed, string.IsNullOrEmpty(first.Error) ? $"worker {connection.State.Id} failed the request" : first.Error);
            // Aborted before any token (e.g. its drain grace ran out during the prefill): nothing reached the client, so try another worker.
            if (first.FinishReason == FinishReason.Abort)
                return Fail(ForwarderError.Aborted, WorkerStream.AbortMessage(connection.State.Id, first));
            lease.PrefillDone();
            _metrics.FirstToken(_time.GetElapsedTime(start));
            var stream = new WorkerStream(call, lease, timeout, linked,
                TimeSpan.FromMilliseconds(_options.InactivityTimeoutMs), first, placed.OverlapBlocks, state.ClientAborted);
            return Outcome.FromResult(AttemptResult.Started(stream));
        }
        catch (RpcException e)
        {
            if (state.ClientAborted.IsCancellationRequested) return Fail(ForwarderError.Canceled, "client disconnected");
            if (timeout.IsCancellationRequested)
                return Fail(ForwarderError.Timeout, $"worker {connection.State.Id} sent no token within {_options.FirstTokenTimeoutMs} ms");
            return Fail(ForwarderErrors.FromStatus(e.StatusCode), e.StatusCode == StatusCode.InvalidArgument || e.StatusCode == StatusCode.OutOfRange
                ? e.Status.Detail
                : $"worker {connection.State.Id}: {e.StatusCode}: {e.Status.Detail}");
        }

        Outcome<AttemptResult> Fail(ForwarderError error, string message)
        {
            call?.Dispose();
            linked.Dispose();
            timeout.Dispose();
            lease.Dispose();
            return Outcome.FromResult(AttemptResult.Failed(error, message, connection.State.Id));
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Placed on {Worker} by {Policy} ({Reason}, {Overlap} cached blocks, cost {Cost})")]
    private static partial void LogPlaced(ILogger logger, string worker, string policy, PlacementReason reason, int overlap, double cost);

    [LoggerMessage(Level = LogLevel.Information, Message = "Retrying on another worker after {Worker} failed with {Error}: {Message}")]
    private static partial void LogRetry(ILogger logger, string? worker, ForwarderError? error, string? message);

    [LoggerMessage(Level = LogLevel.Error, Message = "Unexpected failure while starting a request")]
    private static partial void LogUnexpected(ILogger logger, Exception e);
}
