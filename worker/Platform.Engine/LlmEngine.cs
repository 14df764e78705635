// The engine: one thread owns the model, the KV cache and the scheduler and runs
// step after step (schedule → forward → sample → stream out; the step's wall
// time teaches the scheduler's cost model, and prompts still prefilling or
// queued get progress chunks so a long prefill is never silent). Callers never
// touch that state: they submit through a command queue and read their tokens
// from a per-request channel as an IAsyncEnumerable. Cancelling the enumeration
// aborts the request on the engine thread and frees its blocks at once.
// A fault in the forward pass fails every in-flight request with an error,
// marks the engine unhealthy and releases their memory; it never hangs callers.
// This file keeps the loop, the step and the command queue. The other jobs live
// apart: detokenizing and stop checks (Scheduling/OutputProcessor), submission
// limits (Scheduling/RequestLimits), the request streams (LlmEngine.Streams.cs),
// the KV tier seam (LlmEngine.KvTier.cs; the stores are built by kvcache's
// KvTierStores), DistAttention (LlmEngine.DistAttention.cs), KV pool sizing
// (KvMemoryBudget) and KV events (LlmEngine.KvEvents.cs over KvEventLog and KvEventPublisher).
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Platform.Core.Hashing;
using Platform.Core.KvEvents;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Core.Tokenization;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;
using Platform.Engine.Torch;
using Platform.KvCache;
using TorchSharp;
using static TorchSharp.torch;

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
    private readonly KvEventLog _events = new();
    private readonly List<KvEvent> _eventBuffer = new(256);
    private readonly List<EngineRequest> _impossible = [];
    /// <summary>Requests of the current step that did not sample (their prompt is still prefilling).</summary>
    private readonly List<EngineRequest> _prefilling = [];
    private readonly Random _seedSource;
    private readonly KvEventPublisher _publisher;
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
        _publisher = new KvEventPublisher(_logger);
        var c = model.Config;
        MaxContextTokens = Math.Min(options.MaxContextTokens ?? c.MaxPositionEmbeddings, c.MaxPositionEmbeddings);
        Fingerprint = new ModelFingerprint(c.ModelType, c.NumLayers, c.NumKvHeads, c.HeadDim, c.VocabSize, weightsChecksum,
            TorchDtypes.Name(model.Dtype), options.BlockSize);
        Hasher = new BlockHasher(options.BlockSize, Fingerprint.HashSeed);
        _eosTokens = [.. c.EosTokenIds];
        if (tokenizer?.EosTokenId is { } eos) _eosTokens.Add(eos);
        _seedSource = options.DefaultSeed is { } s ? new Random((int)(s ^ (s >> 32))) : new Random();

        long bytesPerBlock = PagedKvStore.BytesPerBlockFor(c.NumLayers, options.BlockSize, c.NumKvHeads, c.HeadDim, model.Dtype);
        var device = model.Device;
        int blocks = device.type == DeviceType.CPU
            ? KvMemoryBudget.Host.PoolBlocks(options, bytesPerBlock)
            : new DeviceKvBudget().PoolBlocks(options, bytesPerBlock, device);
        _kvStore = new PagedKvStore(c.NumLayers, blocks, options.BlockSize, c.NumKvHeads, c.HeadDim, model.Dtype, device);
        _kv = new KvCacheManager(new BlockPool(blocks, _events), Hasher);
        _scheduler = new Scheduler(_kv, options.MaxBatchTokens, options.MaxRunningRequests,
            StepCostModel.For(c, TimeSpan.FromMilliseconds(options.TargetStepMs)));
        _stats = Snapshot();
        if (options.Threads is { } threads) torch.set_num_threads(threads);
        _thread = new Thread(Loop) { Name = "engine-loop", IsBackground = true };
        _thread.Start();
        LogStarted(_logger, c.ModelType, c.NumLayers, blocks, options.BlockSize, MaxContextTokens);
    }

    /// <summary>How long each phase of <see cref="Load"/> took (empty for an engine built from a loaded model).</summary>
    public IReadOnlyList<LoadPhase> LoadPhases { get; private set; } = [];

    /// <summary>
    /// How long a load waits for the checkpoint's pages to be mapped (ModelWeights.StartPopulating) before it
    /// starts the engine anyway: from the page cache that is ~0.1 s per GB on these VMs; from a cold disk the
    /// first forward pass would wait for the same reads.
    /// </summary>
    private static readonly TimeSpan PopulationWait = TimeSpan.FromMinutes(2);

    /// <summary>Whether the malloc heap libtorch loads into was given transparent huge pages (NativeRuntime.PrepareHeap).</summary>
    public static bool HeapInHugePages => NativeRuntime.HeapHugePages;

    /// <summary>
    /// Loads model and tokenizer from a HuggingFace directory and starts the engine. The tokenizer is read
    /// on another thread while libtorch loads and the weights are mapped (it needs neither); a failure of
    /// either is reported as it was before, the model's first.
    /// </summary>
    public static LlmEngine Load(string modelDirectory, EngineOptions options, IProgress<double>? progress = null, ILogger? logger = null)
    {
        options.Validate();
        var clock = new LoadPhaseClock();
        var tokenizerLoad = Task.Run(() =>
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            HfTokenizer? loaded = File.Exists(Path.Combine(modelDirectory, "tokenizer.json")) || File.Exists(Path.Combine(modelDirectory, "vocab.json"))
                ? HfTokenizer.Load(modelDirectory)
                : null;
            return (Tokenizer: loaded, Took: System.Diagnostics.Stopwatch.GetElapsedTime(start));
        });
        LlamaModel model;
        ModelWeights? files = null;
        Task<bool> pagesMapped = Task.FromResult(false);
        try
        {
            // The checkpoint is mapped before libtorch loads, and its pages are mapped into the process on the other
            // core meanwhile, so the first forward pass does not fault them in one by one.
            // config.json first: its errors are the ones to report for a directory that is not a model at all.
            var config = ModelConfig.Load(modelDirectory);
            files = ModelWeights.Open(modelDirectory);
            files.StartPopulating();
            pagesMapped = files.Populated;
            clock.Mark("config and checkpoint map");
            NativeRuntime.Load();
            clock.Mark("libtorch");
            var device = TorchDevices.Resolve(Platform.Core.Workers.ComputeDevice.Parse(options.Device));
            var owned = files;
            files = null; // the model owns them now, and disposes them if its load fails
            model = LlamaModel.Load(config, owned, TorchDtypes.Parse(options.ComputeDtype), progress, options.WeightDtype, options.Quantization, device);
            clock.Mark("weights");
        }
        catch
        {
            // The model's error is the one to report; the tokenizer's outcome no longer matters.
            files?.Dispose();
            _ = tokenizerLoad.ContinueWith(t => t.Exception, TaskScheduler.Default);
            throw;
        }
        try
        {
            ulong checksum = ModelFingerprint.ChecksumWeights(modelDirectory);
            clock.Mark("fingerprint");
            var (tokenizer, tokenizerTook) = tokenizerLoad.GetAwaiter().GetResult();
            clock.Mark("waiting for the tokenizer");
            // The first forward pass reads every weight: let the population finish first rather than run beside the
            // pass's threads (it then took a core from them, and the pass faulted in the pages it had not reached).
            pagesMapped.Wait(PopulationWait);
            clock.Mark("waiting for the checkpoint's pages");
            var engine = new LlmEngine(model, tokenizer, options, checksum, logger);
            clock.Mark("KV pool and engine thread");
            clock.AddOverlapped("tokenizer", tokenizerTook);
            engine.LoadPhases = clock.Phases;
            foreach (var phase in clock.Phases)
                LogLoadPhase(engine._logger, phase.Name, phase.Took.TotalMilliseconds, phase.Overlapped);
            return engine;
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
        var prompt = request.PromptTokens;
        var (totalTokens, distributed) = new RequestLimits(Config.VocabSize, MaxContextTokens, Options.BlockSize, _kvStore.NumBlocks, DistAttention is not null)
            .Check(prompt, request.Sampling, request.GeneratedTokens);

        var channel = Channel.CreateUnbounded<GenerationChunk>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        ulong seed = request.Sampling.Seed ?? NextSeed();
        var processor = new OutputProcessor(request.Sampling, _eosTokens, Tokenizer?.CreateIncrementalDecoder());
        // A migrated request: the detokenizer and stop checker pick up exactly where the previous worker's stood.
        if (request.GeneratedTokens is { Count: > 0 } generated) processor.Prime(generated, prompt.Count, MaxContextTokens);
        var engineRequest = new EngineRequest(request.RequestId ?? Guid.NewGuid().ToString("n"), prompt, request.Sampling, seed,
            MaxContextTokens, request.ReturnLogits, channel.Writer, processor, Interlocked.Increment(ref _arrivals), request.GeneratedTokens)
        {
            TraceParent = System.Diagnostics.Activity.Current?.Context ?? default,
        };
        if (distributed) return GenerateDistributedAsync(engineRequest, totalTokens, channel.Reader, cancellationToken);
        var tiers = _tiers;
        if (tiers?.Remote is not null) _ = PrefetchThenAddAsync(engineRequest, tiers, cancellationToken);
        else Enqueue(() => _scheduler.Add(engineRequest));
        return ReadAsync(engineRequest, channel.Reader, cancellationToken);
    }

    private ulong NextSeed()
    {
        lock (_seedSource) return (ulong)_seedSource.NextInt64();
    }

    /// <summary>Counters for load reports and metrics (a snapshot refreshed after every step).</summary>
    public EngineStats GetStats() => Volatile.Read(ref _stats);

    private void Enqueue(Action command)
    {
        _commands.Enqueue(command);
        _wake.Release();
    }

    /// <summary>Ends a request the caller gave up on (its blocks and prefetched buffers are freed by the scheduler).</summary>
    private void Abort(EngineRequest request)
    {
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

    /// <summary>Least time between two progress chunks of a prefilling request (a few a second at most).</summary>
    internal TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Time between two progress chunks of a queued request, so that it is never silent for long.</summary>
    internal TimeSpan QueuedProgressInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The scheduler's step cost model (tests and the bench read or seed its rate).</summary>
    internal StepCostModel StepCost => _scheduler.Cost;

    private void Step()
    {
        BeforeStep?.Invoke();
        _impossible.Clear();
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        var scheduled = _scheduler.Schedule(_impossible);
        foreach (var r in _impossible)
        {
            FinishWithError(r, $"the sequence needs {_kv.BlocksFor(r.Tokens.Count) * Options.BlockSize} tokens of KV cache but this worker holds {_kvStore.NumBlocks * Options.BlockSize}.");
        }
        if (scheduled.Count == 0)
        {
            EmitQueuedProgress(DateTimeOffset.UtcNow);
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
        int[]? deviceTokens = null;
        if (batch.NumTokens > 0)
        {
            using (torch.NewDisposeScope())
                (logits, deviceTokens) = ReadStepOutput(_model.Forward(batch, _kvStore), sampling);
        }
        int vocab = Config.VocabSize;
        if (remote is not null) (logits, scheduled) = ForwardRemoteSequences(remote, scheduled, sampling, logits);
        _scheduler.Commit(scheduled);
        _steps++;
        _prefilling.Clear();
        foreach (var s in scheduled)
            if (s.Request.Status == RequestStatus.Running && s.Request.NumComputed < s.Request.Tokens.Count) _prefilling.Add(s.Request);

        // Rows sampled on the device come first; DistAttention's remote rows (sampled here) follow in `logits`.
        int deviceRows = deviceTokens?.Length ?? 0;
        for (int i = 0; i < sampling.Count; i++)
        {
            var r = sampling[i];
            if (i < deviceRows)
            {
                r.Tokens.Add(deviceTokens![i]);
                Emit(r, deviceTokens[i], null, null);
                continue;
            }
            var row = logits.AsSpan((i - deviceRows) * vocab, vocab);
            var p = r.Sampling;
            bool penalised = PenaltyState.Needed(p.PresencePenalty, p.FrequencyPenalty, p.RepetitionPenalty);
            // Log-probabilities come from the raw logits (vLLM's default), so a copy is kept when bias or penalties change the row.
            float[]? rawCopy = p.Logprobs is not null && (p.LogitBias.Count > 0 || penalised) ? row.ToArray() : null;
            foreach (var (biased, bias) in p.LogitBias)
                if ((uint)biased < (uint)row.Length) row[biased] += bias;
            if (penalised)
                (r.Penalties ??= new PenaltyState(r.Tokens, r.PromptLength)).Apply(row, r.Tokens, p.PresencePenalty, p.FrequencyPenalty, p.RepetitionPenalty);
            int token = _sampler.Sample(row, p.Temperature, p.TopK, p.TopP, r.Seed, r.OutputLength, p.MinP);
            r.Tokens.Add(token);
            ReadOnlySpan<float> rawRow = rawCopy is null ? row : rawCopy;
            var logprobs = p.Logprobs is { } top ? TokenLogprobs.Compute(rawRow, token, top) : null;
            Emit(r, token, r.ReturnLogits ? row.ToArray() : null, logprobs);
        }
        _scheduler.ObserveStep(System.Diagnostics.Stopwatch.GetElapsedTime(started));
        now = DateTimeOffset.UtcNow;
        foreach (var r in _prefilling)
        {
            if (r.Status == RequestStatus.Running && (r.LastProgressAt is not { } last || now - last >= ProgressInterval))
                EmitProgress(r, queued: false, now);
        }
        EmitQueuedProgress(now);
        PublishEvents();
        RefreshStats();
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
                LogTierStopFailed(_logger, e);
            }
        }
        _ownedMetrics?.Dispose();
        _kvStore.Dispose();
        _model.Dispose();
        _wake.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Engine started: {ModelType}, {Layers} layers, {Blocks} KV blocks of {BlockSize} tokens, context {Context}")]
    private static partial void LogStarted(ILogger logger, string modelType, int layers, int blocks, int blockSize, int context);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Load phase {Phase}: {Milliseconds:0.0} ms (beside the others: {Overlapped})")]
    private static partial void LogLoadPhase(ILogger logger, string phase, double milliseconds, bool overlapped);

    [LoggerMessage(Level = LogLevel.Error, Message = "Engine step failed; failing all in-flight requests")]
    private static partial void LogStepFailed(ILogger logger, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The KV tier did not stop cleanly")]
    private static partial void LogTierStopFailed(ILogger logger, Exception e);
}
