// Starts a generation on a worker: place, call Generate, wait for the first
// token. Until it arrives nothing has reached the client, so a failure is
// retried on a different worker (Polly retry: bounded, exponential backoff with
// jitter), each attempt passing through that worker's circuit breaker.
// The wait is bounded by silence, not by total time: while the request is queued
// or prefilling, the worker sends PrefillProgress chunks, and each one restarts
// the InactivityTimeoutMs clock. A prompt that takes ten minutes to prefill is
// therefore never cut off or retried while its worker reports progress; only a
// worker that fails or goes silent loses the request to another worker (whose
// prefix lookup finds the blocks the first one wrote through to the KV tier).
// A request the worker rejects as invalid is never retried; a client disconnect
// stops everything. Once the first token is in, the stream belongs to the caller
// (see WorkerStream).
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
    /// <param name="watch">Receives the worker's prefill progress (for keep-alive comments); may be null.</param>
    /// <param name="exclude">Workers not to try (a migrated request's failed workers); may be null.</param>
    public async Task<AttemptResult> StartAsync(GenerateRequest request, PlacementRequest placement, long arrived, PrefillWatch? watch,
        IReadOnlyCollection<string>? exclude, CancellationToken cancellationToken)
    {
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        var state = new AttemptState(request, placement, arrived, watch ?? new PrefillWatch(), cancellationToken);
        if (exclude is not null) state.Tried.UnionWith(exclude);
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

    private sealed class AttemptState(GenerateRequest request, PlacementRequest placement, long arrived, PrefillWatch watch, CancellationToken clientAborted)
    {
        public PrefillWatch Watch { get; } = watch;
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
        string workerId = connection.State.Id;
        int prefillEstimate = Math.Max(0, placement.PromptTokens - placed.OverlapBlocks * placement.BlockSize);
        var lease = connection.State.Lease(prefillEstimate);
        var silence = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        var linked = CancellationTokenSource.CreateLinkedTokenSource(state.ClientAborted, silence.Token);
        var inactivity = TimeSpan.FromMilliseconds(_options.InactivityTimeoutMs);
        AsyncServerStreamingCall<GenerateChunk>? call = null;
        PrefillSnapshot? progress = null;
        long start = _time.GetTimestamp();
        try
        {
            silence.CancelAfter(inactivity);
            if (state.Tried.Count == 1) _metrics.Overhead(_time.GetElapsedTime(state.Arrived));
            state.Watch.Sent(workerId);
            call = connection.Client.Generate(state.Request, cancellationToken: linked.Token);
            GenerateChunk first;
            while (true)
            {
                if (!await call.ResponseStream.MoveNext(CancellationToken.None).ConfigureAwait(false))
                    return Fail(ForwarderError.WorkerFailed, $"worker {workerId} closed the stream before the first token");
                first = call.ResponseStream.Current;
                if (!IsProgress(first)) break;
                // Queued or prefilling: activity. The silence clock starts again, and the worker's queue
                // estimate shrinks to what is left of this prompt.
                progress = state.Watch.Report(workerId, first.Progress);
                lease.PrefillRemaining(Math.Max(0, progress.Total - progress.Computed));
                silence.CancelAfter(inactivity);
            }
            if (first.FinishReason == FinishReason.Error)
                return Fail(ForwarderError.WorkerFailed, string.IsNullOrEmpty(first.Error) ? $"worker {workerId} failed the request" : first.Error);
            // Aborted before any token (e.g. its drain grace ran out during the prefill): nothing reached the client, so try another worker.
            if (first.FinishReason == FinishReason.Abort)
                return Fail(ForwarderError.Aborted, WorkerStream.AbortMessage(workerId, first));
            lease.PrefillDone();
            var elapsed = _time.GetElapsedTime(start);
            _metrics.FirstToken(elapsed);
            if (progress is { Reported: true, Queued: false }) _metrics.Prefill(elapsed);
            var stream = new WorkerStream(call, lease, silence, linked, inactivity, first, placed.OverlapBlocks, state.ClientAborted);
            return Outcome.FromResult(AttemptResult.Started(stream));
        }
        catch (RpcException e)
        {
            if (state.ClientAborted.IsCancellationRequested) return Fail(ForwarderError.Canceled, "client disconnected");
            if (silence.IsCancellationRequested)
            {
                return Fail(ForwarderError.Timeout, progress is { Reported: true } p
                    ? $"worker {workerId} went silent for {inactivity.TotalSeconds:0.#} s after reporting " + (p.Queued ? "the request queued" : $"prefill {p.Computed}/{p.Total} tokens")
                    : $"worker {workerId} sent nothing (no progress, no token) for {inactivity.TotalSeconds:0.#} s");
            }
            return Fail(ForwarderErrors.FromStatus(e.StatusCode), e.StatusCode == StatusCode.InvalidArgument || e.StatusCode == StatusCode.OutOfRange
                ? e.Status.Detail
                : $"worker {workerId}: {e.StatusCode}: {e.Status.Detail}");
        }

        Outcome<AttemptResult> Fail(ForwarderError error, string message)
        {
            call?.Dispose();
            linked.Dispose();
            silence.Dispose();
            lease.Dispose();
            return Outcome.FromResult(AttemptResult.Failed(error, message, workerId));
        }
    }

    /// <summary>A chunk that only reports prefill progress: no tokens, no finish, progress set.</summary>
    internal static bool IsProgress(GenerateChunk chunk) =>
        chunk.Progress is not null && chunk.TokenIds.Count == 0 && chunk.FinishReason == FinishReason.Unspecified;

    [LoggerMessage(Level = LogLevel.Debug, Message = "Placed on {Worker} by {Policy} ({Reason}, {Overlap} cached blocks, cost {Cost})")]
    private static partial void LogPlaced(ILogger logger, string worker, string policy, PlacementReason reason, int overlap, double cost);

    [LoggerMessage(Level = LogLevel.Information, Message = "Retrying on another worker after {Worker} failed with {Error}: {Message}")]
    private static partial void LogRetry(ILogger logger, string? worker, ForwarderError? error, string? message);

    [LoggerMessage(Level = LogLevel.Error, Message = "Unexpected failure while starting a request")]
    private static partial void LogUnexpected(ILogger logger, Exception e);
}
