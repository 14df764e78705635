// The engine's side of the KV tier seam. The stores are built by KvTierStores
// (kvcache/) and attached here; from then on every full computed block is
// written through (KvTierService, engine thread: a memcpy) and a request whose
// prompt the remote store may hold is queued only after its blocks were fetched,
// off the engine thread, within the tier's operation budget.
using Microsoft.Extensions.Logging;
using Platform.Engine.KvCache;
using Platform.Engine.Scheduling;
using Platform.KvCache;

namespace Platform.Engine;

public sealed partial class LlmEngine
{
    /// <summary>
    /// Off the engine thread: fetch the prompt's blocks that only the remote store has (bounded by the
    /// tier's operation budget), then queue the request; a store that is slow, down or skipped just
    /// means the request is queued with less (or nothing) prefetched.
    /// </summary>
    private async Task PrefetchThenAddAsync(EngineRequest request, KvTierService tiers, CancellationToken cancellationToken)
    {
        // Owned here until the engine thread hands it to the request.
        PrefetchedBlocks? prefetch = null;
        try
        {
            // The prompt and, for a migrated request, the outputs it already produced elsewhere: the worker
            // that produced them wrote their blocks through too, so they are fetched like the prompt's.
            var known = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(request.Tokens);
            int usable = (known.Length - 1) / Options.BlockSize;
            if (usable > 0)
            {
                Hasher.ExtendHashes(request.BlockHashes, known[..(usable * Options.BlockSize)]);
                prefetch = await tiers.PrefetchAsync(request.BlockHashes, usable, cancellationToken).ConfigureAwait(false);
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
            prefetch?.Dispose();
            request.Output.TryWrite(new GenerationChunk([], "", FinishReason.Error, request.PromptLength, 0, 0, null, "the engine is shutting down"));
            request.Output.TryComplete();
            return;
        }
        Enqueue(() =>
        {
            if (request.Status == RequestStatus.Finished || _stopping)
            {
                prefetch?.Dispose();
                return;
            }
            request.Prefetch = prefetch;
            _scheduler.Add(request);
        });
    }

    /// <summary>The shape in which this engine's KV blocks leave the device pool for the tier.</summary>
    public KvBlockLayout KvTierLayout(KvTierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return KvBlockLayout.For(Fingerprint, KvTierDtypes.Raw(_model.Dtype), KvTierDtypes.Store(_model.Dtype, options.StoreDtype));
    }

    /// <summary>
    /// Creates the host (and, in remote mode, the shared Redis-compatible) KV tier (KvTierStores.CreateAsync)
    /// and attaches it. A remote store that is down is not an error: the tier is skipped until it answers.
    /// </summary>
    public async Task EnableKvTierAsync(KvTierOptions options, KvTierMetrics? metrics = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        if (errors.Count > 0) throw new ArgumentException(string.Join(" ", errors));
        if (options.ParsedMode == KvTierMode.Off) return;
        if (_tiers is not null) throw new InvalidOperationException("the KV tier is already enabled");
        if (metrics is null) metrics = _ownedMetrics = new KvTierMetrics();
        var stores = await KvTierStores.CreateAsync(options, KvTierLayout(options), Fingerprint.Id, metrics, _logger, cancellationToken).ConfigureAwait(false);
        await AttachKvTierAsync(stores!, metrics, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Attaches stores built for this engine's <see cref="KvTierLayout"/>: write-through and prefix loading start.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "The engine owns the service once the loop attached it (_tiers); Dispose disposes it.")]
    public async Task AttachKvTierAsync(KvTierStores stores, KvTierMetrics metrics, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stores);
        if (_tiers is not null) throw new InvalidOperationException("the KV tier is already enabled");
        var service = new KvTierService(stores.Layout, _kvStore, stores.Host, stores.Remote, metrics, stores.Options.WriteQueueBlocks,
            stores.Options.Remote.PutBatchBlocks, _logger);
        service.EventsPending = RequestPublish;
        var attached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            _kv.Tiers = service;
            _tiers = service;
            attached.SetResult();
        });
        await attached.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        LogKvTier(_logger, stores.Options.ParsedMode.ToString(), stores.Host.Capacity, stores.Layout.EncodedBytes, stores.Options.Remote.Address ?? "-");
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

    [LoggerMessage(Level = LogLevel.Information, Message = "KV tier {Mode}: host memory holds {HostBlocks} blocks of {BlockBytes} bytes; remote store {Remote}")]
    private static partial void LogKvTier(ILogger logger, string mode, int hostBlocks, int blockBytes, string remote);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Remote KV prefetch failed; computing instead")]
    private static partial void LogPrefetchFailed(ILogger logger, Exception e);
}
