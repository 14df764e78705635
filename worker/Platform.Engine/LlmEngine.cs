// The engine: one thread owns the model, the KV cache and the scheduler and runs
// step after step (schedule → forward → sample → stream out). Callers never
// touch that state: they submit through a command queue and read their tokens
// from a per-request channel as an IAsyncEnumerable. Cancelling the enumeration
// aborts the request on the engine thread and frees its blocks at once.
// A fault in the forward pass fails every in-flight request with an error,
// marks the engine unhealthy and releases their memory; it never hangs callers.
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Platform.Core.Hashing;
using Platform.Core.KvEvents;
using Platform.Core.Models;
using Platform.Core.Tokenization;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using TorchSharp;

namespace Platform.Engine;

public sealed partial class LlmEngine : IDisposable
{
    private readonly LlamaModel _model;
    private readonly PagedKvStore _kvStore;
    private readonly KvCacheManager _kv;
    private readonly Scheduler _scheduler;
    private readonly Sampler _sampler = new();
    private readonly ConcurrentQueue<Action> _commands = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly HashSet<int> _eosTokens;
    private readonly List<KvEvent> _eventBuffer = new(256);
    private readonly List<EngineRequest> _impossible = [];
    private readonly Random _seedSource;
    private readonly object _subscribersLock = new();
    private Action<IReadOnlyList<KvEvent>>[] _subscribers = [];
    private volatile bool _stopping;
    private volatile KvTierService? _tiers;
    private int _publishRequested;
    private KvTierMetrics? _ownedMetrics;
    private long _arrivals;
    private long _steps;
    private EngineStats _stats;

    public ModelConfig Config => _model.Config;
    public HfTokenizer? Tokenizer { get; }
    public EngineOptions Options { get; }
    public ModelFingerprint Fingerprint { get; }
    /// <summary>The block hasher the router must share (same block size, same seed).</summary>
    public BlockHasher Hasher { get; }
    public int MaxContextTokens { get; }
    public int TotalKvBlocks => _kvStore.NumBlocks;
    public bool Healthy { get; private set; } = true;
    /// <summary>The host/remote KV tier, when enabled (EnableKvTierAsync).</summary>
    public KvTierService? KvTiers => _tiers;
    public string? LastError { get; private set; }

    public LlmEngine(LlamaModel model, HfTokenizer? tokenizer, EngineOptions options, ulong weightsChecksum = 0, ILogger? logger = null)
    {
        options.Validate();
        _model = model;
        Tokenizer = tokenizer;
        Options = options;
        _logger = logger ?? NullLogger.Instance;
        var c = model.Config;
        MaxContextTokens = Math.Min(options.MaxContextTokens ?? c.MaxPositionEmbeddings, c.MaxPositionEmbeddings);
        Fingerprint = new ModelFingerprint(c.ModelType, c.NumLayers, c.NumKvHeads, c.HeadDim, c.VocabSize, weightsChecksum,
            TorchDtypes.Name(model.Dtype), options.BlockSize);
        Hasher = new BlockHasher(options.BlockSize, Fingerprint.HashSeed);
        _eosTokens = [.. c.EosTokenIds];
        if (tokenizer?.EosTokenId is { } eos) _eosTokens.Add(eos);
        _seedSource = options.DefaultSeed is { } s ? new Random((int)(s ^ (s >> 32))) : new Random();

        long bytesPerBlock = PagedKvStore.BytesPerBlockFor(c.NumLayers, options.BlockSize, c.NumKvHeads, c.HeadDim, model.Dtype);
        int blocks = options.NumKvBlocks ?? (int)Math.Clamp(KvMemoryBudget.Host.KvPoolBytes(options) / bytesPerBlock, 1, int.MaxValue / options.BlockSize);
        _kvStore = new PagedKvStore(c.NumLayers, blocks, options.BlockSize, c.NumKvHeads, c.HeadDim, model.Dtype);
        _kv = new KvCacheManager(new BlockPool(blocks), Hasher);
        _scheduler = new Scheduler(_kv, options.MaxBatchTokens, options.MaxRunningRequests);
        _stats = Snapshot();
        if (options.Threads is { } threads) torch.set_num_threads(threads);
        _thread = new Thread(Loop) { Name = "engine-loop", IsBackground = true };
        _thread.Start();
        LogStarted(_logger, c.ModelType, c.NumLayers, blocks, options.BlockSize, MaxContextTokens);
    }

    /// <summary>Loads model and tokenizer from a HuggingFace directory and starts the engine.</summary>
    public static LlmEngine Load(string modelDirectory, EngineOptions options, IProgress<double>? progress = null, ILogger? logger = null)
    {
        options.Validate();
        var model = LlamaModel.Load(modelDirectory, TorchDtypes.Parse(options.ComputeDtype), progress);
        try
        {
            HfTokenizer? tokenizer = File.Exists(Path.Combine(modelDirectory, "tokenizer.json")) || File.Exists(Path.Combine(modelDirectory, "vocab.json"))
                ? HfTokenizer.Load(modelDirectory)
                : null;
            return new LlmEngine(model, tokenizer, options, ModelFingerprint.ChecksumWeights(modelDirectory), logger);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Validates and submits a request; the tokens stream back as chunks. Throws
    /// <see cref="EngineRequestException"/> at once for a request that cannot be served.
    /// </summary>
    public IAsyncEnumerable<GenerationChunk> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_stopping, this);
        if (!Healthy)
            throw new EngineUnavailableException($"the engine failed and refuses new requests until it is restarted: {LastError}");
        request.Sampling.Validate();
        var prompt = request.PromptTokens;
        if (prompt.Count == 0) throw new EngineRequestException("the prompt is empty; send at least one token.");
        foreach (int id in prompt)
            if (id < 0 || id >= Config.VocabSize)
                throw new EngineRequestException($"token id {id} is outside the vocabulary [0, {Config.VocabSize}).");
        if (prompt.Count >= MaxContextTokens)
            throw new EngineRequestException($"the prompt has {prompt.Count} tokens but this model's context holds at most {MaxContextTokens}; shorten the prompt.");
        if (prompt.Count + request.Sampling.MaxTokens > MaxContextTokens)
            throw new EngineRequestException(
                $"the prompt ({prompt.Count} tokens) plus max_tokens ({request.Sampling.MaxTokens}) exceeds the context of {MaxContextTokens} tokens; lower max_tokens to at most {MaxContextTokens - prompt.Count}.");
        // With DistAttention, a sequence whose whole KV (prompt and max_tokens) cannot fit here borrows from peers.
        int totalTokens = Math.Min(prompt.Count + request.Sampling.MaxTokens, MaxContextTokens);
        bool distributed = DistAttention is not null && _kv.BlocksFor(totalTokens) > _kvStore.NumBlocks;
        int needBlocks = _kv.BlocksFor(prompt.Count + 1);
        if (!distributed && needBlocks > _kvStore.NumBlocks)
            throw new EngineRequestException(
                $"the prompt needs {needBlocks * Options.BlockSize} tokens of KV cache but this worker holds {_kvStore.NumBlocks * Options.BlockSize}; shorten the prompt, give the worker more KV memory, or turn DistAttention on to borrow from peers.");

        var channel = Channel.CreateUnbounded<GenerationChunk>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        ulong seed = request.Sampling.Seed ?? NextSeed();
        var engineRequest = new EngineRequest(request.RequestId ?? Guid.NewGuid().ToString("n"), prompt, request.Sampling, seed,
            MaxContextTokens, request.ReturnLogits, channel.Writer, Tokenizer?.CreateIncrementalDecoder(), Interlocked.Increment(ref _arrivals))
        {
            TraceParent = System.Diagnostics.Activity.Current?.Context ?? default,
        };
        if (distributed) return GenerateDistributedAsync(engineRequest, totalTokens, channel.Reader, cancellationToken);
        var tiers = _tiers;
        if (tiers?.Remote is not null) _ = PrefetchThenAddAsync(engineRequest, tiers, cancellationToken);
        else Enqueue(() => _scheduler.Add(engineRequest));
        return ReadAsync(engineRequest, channel.Reader, cancellationToken);
    }

    /// <summary>
    /// Off the engine thread: fetch the prompt's blocks that only the remote store has (bounded by the
    /// tier's operation budget), then queue the request; a store that is slow, down or skipped just
    /// means the request is queued with less (or nothing) prefetched.
    /// </summary>
    private async Task PrefetchThenAddAsync(EngineRequest request, KvTierService tiers, CancellationToken cancellationToken)
    {
        try
        {
            var prompt = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(request.Tokens)[..request.PromptLength];
            int usable = (request.PromptLength - 1) / Options.BlockSize;
            if (usable > 0)
            {
                Hasher.ExtendHashes(request.BlockHashes, prompt[..(usable * Options.BlockSize)]);
                request.Prefetch = await tiers.PrefetchAsync(request.BlockHashes, usable, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The caller went away; the abort command ends the request.
        }
        catch (Exception e)
        {
            LogPrefetchFailed(_logger, e);
        }
        if (_stopping)
        {
            // The engine loop may already have ended: nobody would run the command below.
            KvTierService.ReleasePrefetch(request);
            request.Output.TryWrite(new GenerationChunk([], "", FinishReason.Error, request.PromptLength, 0, 0, null, "the engine is shutting down"));
            request.Output.TryComplete();
            return;
        }
        Enqueue(() =>
        {
            if (request.Status == RequestStatus.Finished || _stopping)
            {
                KvTierService.ReleasePrefetch(request);
                return;
            }
            _scheduler.Add(request);
        });
    }

    /// <summary>
    /// Attaches the host (and, in remote mode, the shared Redis-compatible) KV tier. A remote store
    /// that is down is not an error: the tier is skipped until it answers.
    /// </summary>
    public async Task EnableKvTierAsync(KvTierOptions options, KvTierMetrics? metrics = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        if (errors.Count > 0) throw new ArgumentException(string.Join(" ", errors));
        var mode = options.ParsedMode;
        if (mode == KvTierMode.Off) return;
        if (_tiers is not null) throw new InvalidOperationException("the KV tier is already enabled");
        var layout = KvBlockLayout.For(Fingerprint, KvTierDtypes.Raw(_model.Dtype), KvTierDtypes.Store(_model.Dtype, options.StoreDtype));
        if (metrics is null) metrics = _ownedMetrics = new KvTierMetrics();
        var host = new HostKvTier(options.HostMemoryBytes, layout.EncodedBytes);
        RedisKvTier? remote = mode == KvTierMode.Remote
            ? await RedisKvTier.ConnectAsync(options.Remote, Fingerprint.Id, metrics, _logger, cancellationToken: cancellationToken).ConfigureAwait(false)
            : null;
        var service = new KvTierService(layout, _kvStore, host, remote, metrics, options.WriteQueueBlocks, options.Remote.PutBatchBlocks, _logger);
        service.EventsPending = RequestPublish;
        var attached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            _kv.Tiers = service;
            _tiers = service;
            attached.SetResult();
        });
        await attached.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        LogKvTier(_logger, mode.ToString(), host.Capacity, layout.EncodedBytes, options.Remote.Address ?? "-");
    }

    /// <summary>Forgets every block of the device prefix cache (benchmarks: makes the next lookup go to the lower tiers).</summary>
    internal Task ClearDeviceCacheAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            _kv.Pool.ClearCache();
            PublishEvents();
            done.SetResult();
        });
        return done.Task;
    }

    private void RequestPublish()
    {
        if (Interlocked.Exchange(ref _publishRequested, 1) == 0)
            Enqueue(() =>
            {
                Volatile.Write(ref _publishRequested, 0);
                PublishEvents();
            });
    }

    private ulong NextSeed()
    {
        lock (_seedSource) return (ulong)_seedSource.NextInt64();
    }

    private async IAsyncEnumerable<GenerationChunk> ReadAsync(EngineRequest request, ChannelReader<GenerationChunk> reader,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        bool finished = false;
        using var registration = cancellationToken.Register(() => Enqueue(() => Abort(request)));
        try
        {
            while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var chunk))
                {
                    if (chunk.Finish is not null) finished = true;
                    yield return chunk;
                }
            }
        }
        finally
        {
            // The consumer stopped early (break, dispose, exception): free the request's blocks.
            if (!finished) Enqueue(() => Abort(request));
        }
    }

    /// <summary>Counters for load reports and metrics (a snapshot refreshed after every step).</summary>
    public EngineStats GetStats() => Volatile.Read(ref _stats);

    /// <summary>
    /// Receives KV events on the engine thread after each step (keep the handler quick).
    /// The returned snapshot holds every block cached at subscription time, with the
    /// sequence number of the last event it includes.
    /// </summary>
    public Task<KvSubscription> SubscribeKvEventsAsync(Action<IReadOnlyList<KvEvent>> handler)
    {
        var tcs = new TaskCompletionSource<KvSubscription>(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            // Pending tier events first, to the existing subscribers; the new one gets them in the snapshot.
            PublishEvents();
            lock (_subscribersLock) _subscribers = [.. _subscribers, handler];
            var blocks = _kv.Pool.SnapshotCached();
            var tiers = _tiers?.SnapshotTiers() ?? [];
            tcs.SetResult(new KvSubscription(_kv.Pool.LastEventSequence, blocks, tiers, () =>
            {
                lock (_subscribersLock) _subscribers = _subscribers.Where(s => s != handler).ToArray();
            }));
        });
        return tcs.Task;
    }

    private void Enqueue(Action command)
    {
        _commands.Enqueue(command);
        _wake.Release();
    }

    private void Abort(EngineRequest request)
    {
        KvTierService.ReleasePrefetch(request);
        if (request.Status == RequestStatus.Finished) return;
        _scheduler.Remove(request);
        request.Output.TryComplete();
        RefreshStats();
    }

    private void Loop()
    {
        using var noGrad = torch.no_grad();
        if (Options.Threads is { } threads) torch.set_num_threads(threads);
        while (!_stopping)
        {
            while (_commands.TryDequeue(out var command)) command();
            if (!_scheduler.HasWork)
            {
                _wake.Wait();
                continue;
            }
            try
            {
                Step();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                FailAll(e);
            }
        }
        while (_commands.TryDequeue(out var command)) command();
        FailAll(new ObjectDisposedException(nameof(LlmEngine), "the engine is shutting down"));
    }

    /// <summary>Test hook: called at the start of every step; throwing from it simulates a fault in the forward pass.</summary>
    internal Action? BeforeStep { get; set; }

    private void Step()
    {
        BeforeStep?.Invoke();
        _impossible.Clear();
        var scheduled = _scheduler.Schedule(_impossible);
        foreach (var r in _impossible)
        {
            FinishWithError(r, $"the sequence needs {_kv.BlocksFor(r.Tokens.Count) * Options.BlockSize} tokens of KV cache but this worker holds {_kvStore.NumBlocks * Options.BlockSize}.");
        }
        if (scheduled.Count == 0)
        {
            PublishEvents();
            RefreshStats();
            return;
        }

        using var stepActivity = EngineTelemetry.StartStep(scheduled);
        var now = DateTimeOffset.UtcNow;
        var batch = new ForwardBatch();
        var sampling = new List<EngineRequest>(scheduled.Count);
        List<ScheduledRequest>? remote = null;
        foreach (var s in scheduled)
        {
            var r = s.Request;
            if (r.AdmittedAt is null)
            {
                r.AdmittedAt = now;
                EngineTelemetry.Span("engine.queue", r, r.ArrivedAt, now, ("prompt.tokens", r.PromptLength));
            }
            if (r.ComputesRemotely)
            {
                (remote ??= []).Add(s);
                continue;
            }
            var slice = batch.AddSequence(r.Tokens, r.NumComputed, s.NumTokens, r.Blocks, Options.BlockSize);
            if (r.NumComputed + s.NumTokens == r.Tokens.Count)
            {
                batch.LogitRows.Add(slice.TokenStart + slice.NumTokens - 1);
                sampling.Add(r);
            }
        }

        float[] logits = [];
        if (batch.NumTokens > 0)
        {
            using (torch.NewDisposeScope())
            {
                var output = _model.Forward(batch, _kvStore);
                logits = sampling.Count == 0 ? [] : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(output.contiguous().bytes).ToArray();
            }
        }
        int vocab = Config.VocabSize;
        if (remote is not null)
        {
            // DistAttention sequences run one by one after the local batch; a failed one has already been ended.
            var rows = new List<float>(logits);
            var committed = scheduled.Where(s => !s.Request.ComputesRemotely).ToList();
            foreach (var s in remote)
            {
                if (ForwardRemote(s) is not { } remoteLogits) continue;
                committed.Add(s);
                if (s.Request.NumComputed + s.NumTokens == s.Request.Tokens.Count)
                {
                    sampling.Add(s.Request);
                    rows.AddRange(remoteLogits);
                }
            }
            logits = [.. rows];
            scheduled = committed;
        }
        _scheduler.Commit(scheduled);
        _steps++;

        for (int i = 0; i < sampling.Count; i++)
        {
            var row = logits.AsSpan(i * vocab, vocab);
            var r = sampling[i];
            var p = r.Sampling;
            int token = _sampler.Sample(row, p.Temperature, p.TopK, p.TopP, r.Seed, r.OutputLength);
            r.Tokens.Add(token);
            Emit(r, token, r.ReturnLogits ? row.ToArray() : null);
        }
        PublishEvents();
        RefreshStats();
    }

    /// <summary>Streams one new token, applying stop conditions (EOS, stop ids, stop strings, lengths).</summary>
    private void Emit(EngineRequest r, int token, float[]? logits)
    {
        var p = r.Sampling;
        FinishReason? finish = null;
        bool stopToken = (!p.IgnoreEos && _eosTokens.Contains(token)) || p.StopTokenIds.Contains(token);
        string text = "";
        if (stopToken) finish = FinishReason.Stop;
        else if (r.Decoder is { } decoder)
        {
            r.PendingText += decoder.Push(token);
            if (p.StopStrings.Count > 0 && FindStop(r.PendingText, p.StopStrings) is int cut and >= 0)
            {
                text = r.PendingText[..cut];
                r.PendingText = "";
                finish = FinishReason.Stop;
            }
        }
        if (finish is null && (r.OutputLength >= p.MaxTokens || r.Tokens.Count >= r.MaxTotalTokens)) finish = FinishReason.Length;

        if (finish is null)
        {
            int hold = p.StopStrings.Count == 0 ? 0 : p.StopStrings.Max(s => s.Length) - 1;
            int release = Math.Max(0, r.PendingText.Length - hold);
            // Never split a surrogate pair between chunks.
            if (release > 0 && release < r.PendingText.Length && char.IsHighSurrogate(r.PendingText[release - 1])) release--;
            text = r.PendingText[..release];
            r.PendingText = r.PendingText[release..];
        }
        else if (finish == FinishReason.Length || (stopToken && r.Decoder is not null))
        {
            text = r.PendingText + (r.Decoder?.Flush() ?? "");
            r.PendingText = "";
        }

        r.Output.TryWrite(new GenerationChunk([token], text, finish, r.PromptLength, Math.Max(0, r.CachedPromptTokens), r.OutputLength,
            logits is null ? null : [logits], null, Split(r)));
        var now = DateTimeOffset.UtcNow;
        if (r.FirstTokenAt is null)
        {
            r.FirstTokenAt = now;
            EngineTelemetry.Span("engine.prefill", r, r.AdmittedAt ?? r.ArrivedAt, now,
                ("prompt.tokens", r.PromptLength), ("cached.tokens", Math.Max(0, r.CachedPromptTokens)), ("preemptions", r.Preemptions));
        }
        if (finish is not null)
            EngineTelemetry.Span("engine.decode", r, r.FirstTokenAt.Value, now, ("completion.tokens", r.OutputLength), ("finish.reason", finish.ToString()));
        if (finish is not null)
        {
            try
            {
                _scheduler.Finish(r);
            }
            finally
            {
                r.Output.TryComplete();
            }
        }
    }

    private static int FindStop(string text, IReadOnlyList<string> stops)
    {
        int best = -1;
        foreach (var s in stops)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        return best;
    }

    private void FinishWithError(EngineRequest r, string message)
    {
        if (r.Status != RequestStatus.Finished) _scheduler.Remove(r);
        KvTierService.ReleasePrefetch(r);
        r.Output.TryWrite(new GenerationChunk([], "", FinishReason.Error, r.PromptLength, Math.Max(0, r.CachedPromptTokens), r.OutputLength, null, message, Split(r)));
        r.Output.TryComplete();
    }

    private void FailAll(Exception e)
    {
        if (e is not ObjectDisposedException)
        {
            Healthy = false;
            LastError = e.Message;
            LogStepFailed(_logger, e);
        }
        foreach (var r in _scheduler.Running.Concat(_scheduler.Waiting).ToList())
            FinishWithError(r, $"engine failure: {e.Message}");
        PublishEvents();
        RefreshStats();
    }

    private static CachedTokenSplit Split(EngineRequest r)
    {
        int cached = Math.Max(0, r.CachedPromptTokens);
        return new CachedTokenSplit(cached - r.CachedHostTokens - r.CachedRemoteTokens, r.CachedHostTokens, r.CachedRemoteTokens);
    }

    private void PublishEvents()
    {
        _tiers?.DrainEvents(_kv.Pool);
        _eventBuffer.Clear();
        _kv.Pool.DrainEvents(_eventBuffer);
        if (_eventBuffer.Count == 0) return;
        var events = _eventBuffer.ToArray();
        foreach (var s in _subscribers)
        {
            try
            {
                s(events);
            }
            catch (Exception e)
            {
                LogSubscriberFailed(_logger, e);
            }
        }
    }

    private void RefreshStats() => Volatile.Write(ref _stats, Snapshot());

    private EngineStats Snapshot() => new(
        _scheduler.RunningCount, _scheduler.WaitingCount, _scheduler.QueuedPrefillTokens,
        _kv.Pool.UsedBlocks, _kv.Pool.FreeBlocks, _kv.Pool.TotalBlocks, _kv.Pool.CachedBlocks,
        _scheduler.TotalPreemptions, _kv.Pool.PrefixQueries, _kv.Pool.PrefixHits, _steps);

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        _wake.Release();
        _thread.Join();
        if (_tiers is { } tiers)
        {
            try
            {
                tiers.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException e)
            {
                LogSubscriberFailed(_logger, e);
            }
        }
        _ownedMetrics?.Dispose();
        _kvStore.Dispose();
        _model.Dispose();
        _wake.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Engine started: {ModelType}, {Layers} layers, {Blocks} KV blocks of {BlockSize} tokens, context {Context}")]
    private static partial void LogStarted(ILogger logger, string modelType, int layers, int blocks, int blockSize, int context);

    [LoggerMessage(Level = LogLevel.Error, Message = "Engine step failed; failing all in-flight requests")]
    private static partial void LogStepFailed(ILogger logger, Exception e);

    [LoggerMessage(Level = LogLevel.Information, Message = "KV tier {Mode}: host memory holds {HostBlocks} blocks of {BlockBytes} bytes; remote store {Remote}")]
    private static partial void LogKvTier(ILogger logger, string mode, int hostBlocks, int blockBytes, string remote);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Remote KV prefetch failed; computing instead")]
    private static partial void LogPrefetchFailed(ILogger logger, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A KV event subscriber threw")]
    private static partial void LogSubscriberFailed(ILogger logger, Exception e);
}

/// <summary>The engine cannot take requests (it failed, or is shutting down): maps to HTTP 503.</summary>
public sealed class EngineUnavailableException(string message) : Exception(message);

public sealed record EngineStats(int Running, int Waiting, long QueuedPrefillTokens, int KvBlocksUsed, int KvBlocksFree, int KvBlocksTotal,
    int KvBlocksCached, long Preemptions, long PrefixQueriedBlocks, long PrefixHitBlocks, long Steps);

/// <summary>A live KV event subscription with the snapshot it starts from.</summary>
public sealed class KvSubscription(long lastSequence, IReadOnlyList<(ulong Hash, ulong Parent)> blocks,
    IReadOnlyList<(ulong Hash, ulong Parent, KvTier Tier)> tierBlocks, Action unsubscribe) : IDisposable
{
    public long SnapshotSequence { get; } = lastSequence;
    /// <summary>Blocks in the device pool.</summary>
    public IReadOnlyList<(ulong Hash, ulong Parent)> CachedBlocks { get; } = blocks;
    /// <summary>Blocks in the host tier and (as far as this worker knows) the remote store.</summary>
    public IReadOnlyList<(ulong Hash, ulong Parent, KvTier Tier)> TierBlocks { get; } = tierBlocks;
    public void Dispose() => unsubscribe();
}
