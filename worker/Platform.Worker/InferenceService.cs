// The Inference gRPC service (core/Platform.Core/Protos/inference.proto) over
// the engine. Generate streams chunks as the engine produces them (progress
// chunks of a queued or prefilling prompt included); a client
// cancel (ServerCallContext.CancellationToken) aborts the engine request, which
// frees its KV blocks on the engine thread. Bad requests are InvalidArgument
// with the engine's fix-it message; a loading, faulted or draining worker
// answers Unavailable so the router places the request elsewhere.
// SubscribeKvEvents: snapshot first, then live batches through a bounded
// per-subscriber channel that the engine thread only ever TryWrites to; a
// subscriber that falls behind is cut off (ResourceExhausted) and resyncs.
using System.Diagnostics;
using System.Threading.Channels;
using Grpc.Core;
using Microsoft.Extensions.Options;
using Platform.Core.Protos;
using Platform.Engine;
using Platform.Engine.Scheduling;
using FinishReason = Platform.Core.Protos.FinishReason;
using CoreKv = Platform.Core.KvEvents;

namespace Platform.Worker;

internal sealed class InferenceService : Inference.InferenceBase
{
    private readonly EngineHost _engines;
    private readonly DrainCoordinator _drain;
    private readonly WorkerMetrics _metrics;
    private readonly WorkerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<InferenceService> _logger;

    public InferenceService(EngineHost engines, DrainCoordinator drain, WorkerMetrics metrics, IOptions<WorkerOptions> options, TimeProvider time,
        ILogger<InferenceService> logger)
    {
        _engines = engines;
        _drain = drain;
        _metrics = metrics;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    private LlmEngine RequireEngine()
    {
        var engine = _engines.Engine;
        if (engine is null)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, _engines.State == EngineState.Failed
                ? $"this worker failed to load its model ({_engines.LoadError}); use another worker."
                : "this worker is still loading its model; retry when its health service reports SERVING."));
        }
        if (!engine.Healthy)
            throw new RpcException(new Status(StatusCode.Unavailable, $"this worker's engine faulted ({engine.LastError}); use another worker."));
        return engine;
    }

    public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateChunk> responseStream, ServerCallContext context)
    {
        var engine = RequireEngine();
        string requestId = string.IsNullOrEmpty(request.RequestId) ? Guid.NewGuid().ToString("n") : request.RequestId;
        using var lease = _drain.TryBeginRequest();
        if (lease is null)
        {
            Log.GenerateRejected(_logger, requestId, "draining");
            throw new RpcException(new Status(StatusCode.Unavailable, "this worker is draining (shutting down); send the request to another worker."));
        }

        using var activity = WorkerTelemetry.Source.StartActivity("generate");
        activity?.SetTag("platform.request_id", requestId);
        activity?.SetTag("gen_ai.request.model", _options.ResolvedServedModelName);
        activity?.SetTag("gen_ai.usage.input_tokens", request.PromptTokenIds.Count);

        IAsyncEnumerable<GenerationChunk> chunks;
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _drain.HardStop);
        try
        {
            var sampling = ProtoMapping.ToSampling(request.Sampling, request.PromptTokenIds.Count, engine.MaxContextTokens);
            chunks = engine.GenerateAsync(new GenerationRequest(request.PromptTokenIds.ToArray(), sampling, requestId,
                GeneratedTokens: request.GeneratedTokenIds.Count > 0 ? request.GeneratedTokenIds.ToArray() : null), abort.Token);
            Log.GenerateStarted(_logger, requestId, request.PromptTokenIds.Count, sampling.MaxTokens);
        }
        catch (EngineRequestException e)
        {
            Log.GenerateRejected(_logger, requestId, e.Message);
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        catch (ObjectDisposedException)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, "this worker is shutting down; send the request to another worker."));
        }
        catch (EngineUnavailableException e)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, $"{e.Message}; use another worker."));
        }

        long start = _time.GetTimestamp();
        long previous = start;
        GenerationChunk? last = null;
        int completionTokens = 0;
        try
        {
            await foreach (var chunk in chunks)
            {
                if (chunk.TokenIds.Count > 0)
                {
                    long now = _time.GetTimestamp();
                    if (chunk.Times is { } times) _metrics.Phases(times.Queue, times.Prefill);
                    if (completionTokens == 0)
                    {
                        _metrics.FirstToken(_time.GetElapsedTime(start, now));
                        activity?.AddEvent(new ActivityEvent("first_token"));
                    }
                    else _metrics.NextToken(_time.GetElapsedTime(previous, now) / chunk.TokenIds.Count);
                    previous = now;
                    completionTokens += chunk.TokenIds.Count;
                    _metrics.GeneratedTokens(chunk.TokenIds.Count);
                }
                // A progress chunk (no tokens, no finish) goes out as it is: it is the router's sign of life
                // during a long prefill or queue. It counts as no token anywhere here.
                last = chunk;
                // No token here: cancelling a write resets the HTTP/2 stream, and an abort by the drain must still
                // reach the client as a final chunk. A client that is gone fails the write by itself.
                await responseStream.WriteAsync(ProtoMapping.ToProto(chunk));
            }
        }
        catch (EngineRequestException e) when (last is null)
        {
            // Refused after planning (DistAttention peers could not hold the sequence): still a bad request, not a fault.
            Log.GenerateRejected(_logger, requestId, e.Message);
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        catch (Exception) when (context.CancellationToken.IsCancellationRequested)
        {
            // The client went away (the engine read or our write failed with it): the engine request is
            // already aborted and its blocks freed; there is no one left to tell.
            Log.GenerateCancelled(_logger, requestId, completionTokens);
            Finish(activity, "abort", last, request.PromptTokenIds.Count, completionTokens, start);
            return;
        }
        catch (OperationCanceledException) when (_drain.HardStop.IsCancellationRequested)
        {
            Log.GenerateAbortedByShutdown(_logger, requestId, completionTokens);
            Finish(activity, "abort", last, request.PromptTokenIds.Count, completionTokens, start);
            await responseStream.WriteAsync(new GenerateChunk
            {
                FinishReason = FinishReason.Abort,
                PromptTokens = last?.PromptTokens ?? request.PromptTokenIds.Count,
                CompletionTokens = completionTokens,
                Cached = ProtoMapping.ToProto(last?.CachedByTier ?? default),
                Error = "the worker shut down before the request finished (drain grace period elapsed); retry on another worker.",
            }, CancellationToken.None);
            return;
        }

        string reason = last?.Finish switch
        {
            Platform.Engine.Scheduling.FinishReason.Stop => "stop",
            Platform.Engine.Scheduling.FinishReason.Length => "length",
            Platform.Engine.Scheduling.FinishReason.Abort => "abort",
            Platform.Engine.Scheduling.FinishReason.Error => "error",
            _ => "error",
        };
        if (last?.Finish is null)
        {
            // The engine closed the stream without a final chunk (it is shutting down): end it explicitly.
            await responseStream.WriteAsync(new GenerateChunk
            {
                FinishReason = FinishReason.Error,
                PromptTokens = request.PromptTokenIds.Count,
                CompletionTokens = completionTokens,
                Error = "the engine stopped before the request finished; retry on another worker.",
            }, CancellationToken.None);
        }
        if (last?.Error is { } error) activity?.SetStatus(ActivityStatusCode.Error, error);
        Finish(activity, reason, last, request.PromptTokenIds.Count, completionTokens, start);
        Log.GenerateFinished(_logger, requestId, reason, completionTokens, last?.CachedTokens ?? 0, _time.GetElapsedTime(start).TotalMilliseconds);
    }

    private void Finish(Activity? activity, string reason, GenerationChunk? last, int promptTokens, int completionTokens, long start)
    {
        _metrics.Finished(reason, promptTokens, _time.GetElapsedTime(start));
        activity?.SetTag("gen_ai.response.finish_reasons", reason);
        activity?.SetTag("gen_ai.usage.output_tokens", completionTokens);
        activity?.SetTag("platform.cached_tokens", last?.CachedTokens ?? 0);
    }

    public override Task<LoadReport> GetLoad(LoadRequest request, ServerCallContext context)
    {
        var engine = _engines.Engine;
        return Task.FromResult(ProtoMapping.ToLoadReport(engine?.GetStats(), engine is { Healthy: true }, _drain.IsDraining, engine?.KvTiers));
    }

    public override Task<WorkerInfo> GetInfo(InfoRequest request, ServerCallContext context)
    {
        var engine = _engines.Engine ?? throw new RpcException(new Status(StatusCode.Unavailable,
            "this worker is still loading its model; retry when its health service reports SERVING."));
        return Task.FromResult(new WorkerInfo
        {
            WorkerId = _options.ResolvedWorkerId,
            ServedModelName = _options.ResolvedServedModelName,
            ModelFingerprint = engine.Fingerprint.Canonical,
            BlockSize = engine.Options.BlockSize,
            BlockHashSeed = engine.Hasher.Seed,
            MaxContextTokens = engine.MaxContextTokens,
            VocabSize = engine.Config.VocabSize,
        });
    }

    public override async Task SubscribeKvEvents(SubscribeKvEventsRequest request, IServerStreamWriter<KvEventBatch> responseStream, ServerCallContext context)
    {
        var engine = RequireEngine();
        int capacity = _options.KvSubscriberBufferBatches;
        var channel = Channel.CreateBounded<IReadOnlyList<CoreKv.KvEvent>>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,  // TryWrite fails instead of waiting: the engine thread never blocks.
        });
        // Runs on the engine thread after each step.
        void OnEvents(IReadOnlyList<CoreKv.KvEvent> batch)
        {
            if (!channel.Writer.TryWrite(batch)) channel.Writer.TryComplete(new SubscriberOverflowException());
        }

        // The engine registers the handler on its thread after the current step. If the client leaves
        // before that, the subscription still completes later and must be disposed then.
        var subscribing = engine.SubscribeKvEventsAsync(OnEvents);
        KvSubscription subscription;
        try
        {
            subscription = await subscribing.WaitAsync(context.CancellationToken);
        }
        catch (OperationCanceledException)
        {
            _ = subscribing.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            throw;
        }
        using var subscriptionScope = subscription;
        using var end = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _drain.StreamsEnd);
        string workerId = _options.ResolvedWorkerId;
        Log.KvSubscriberConnected(_logger, context.Peer, subscription.SnapshotSequence, subscription.CachedBlocks.Count);

        var snapshot = new KvEventBatch { IsSnapshot = true, SnapshotSequence = subscription.SnapshotSequence, WorkerId = workerId };
        foreach (var (hash, parent) in subscription.CachedBlocks)
            snapshot.Snapshot.Add(new BlockRef { BlockHash = hash, ParentHash = parent, Tier = KvTier.Device });
        foreach (var (hash, parent, tier) in subscription.TierBlocks)
            snapshot.Snapshot.Add(new BlockRef { BlockHash = hash, ParentHash = parent, Tier = ProtoMapping.ToProto(tier) });
        try
        {
            await responseStream.WriteAsync(snapshot, end.Token);
            var reader = channel.Reader;
            while (await reader.WaitToReadAsync(end.Token))
            {
                // Coalesce whatever is queued into one message (bounded, so one message stays small).
                var message = new KvEventBatch { WorkerId = workerId };
                while (message.Events.Count < 8192 && reader.TryRead(out var batch))
                    foreach (var e in batch) message.Events.Add(ProtoMapping.ToProto(e));
                await responseStream.WriteAsync(message, end.Token);
            }
        }
        catch (SubscriberOverflowException)
        {
            Log.KvSubscriberOverflow(_logger, context.Peer, capacity);
            throw new RpcException(new Status(StatusCode.ResourceExhausted,
                $"this KV event subscriber fell more than {capacity} batches behind; reconnect to receive a fresh snapshot."));
        }
        catch (OperationCanceledException) when (end.IsCancellationRequested)
        {
            Log.KvSubscriberDisconnected(_logger, context.Peer);
        }
    }

    private sealed class SubscriberOverflowException() : Exception("the subscriber's event buffer overflowed");
}
