// The engine's side of the KV tier (kvcache/): write-through of computed blocks
// to host memory and the shared remote store, and loading of a new request's
// prefix from those tiers into device blocks.
//
// Threads and costs, since the engine thread must never wait on I/O:
// * Engine thread, when blocks become full and computed (a request's, per step):
//   copy their K/V out of the device pools into pooled raw buffers (one batched
//   transfer) and hand them to the writer. No buffer free (the writer is behind) = the block is dropped, counted,
//   never waited for. WriteQueueBlocks buffers bound the memory.
// * Writer task: encodes each block (BlockCodec), stores it in the host tier and
//   sends batches to the remote store without awaiting them in line (at most
//   MaxRemotePutsInFlight batches; beyond that the remote copy is dropped).
// * Before a request is queued (caller's flow, off the engine thread): its block
//   hashes are computed, and the blocks after those the host tier holds are
//   fetched from the remote store (pipelined, stop at the first miss, within
//   the operation budget), verified and decoded into pooled raw buffers. The
//   request is then queued, with whatever arrived in time.
// * Engine thread, at admission: after the device prefix, each next block is
//   taken from the host tier (verified, decoded) or from the prefetched remote
//   blocks, copied into a fresh device block and registered in the prefix cache,
//   until the first block neither has. Only the remainder is prefilled.
// Blocks leave and enter the pools in batches (KvTierTransfer: a memcpy per
// block on CPU pools; on other devices one gather into a staging tensor and
// one device-host copy per batch, pinned on cuda).
// Blocks leave and enter the pools as raw bytes of the compute dtype (float32,
// bfloat16 or float16): no conversion on the engine thread, and a 16-bit engine's
// blocks take half the bytes. The model fingerprint (and so every block hash and
// remote key) names that dtype, and the codec header records it.
// Tier changes (host stored/evicted, remote stored) are queued here and drained
// by the engine thread into the engine's KV event log (DrainEvents).
// A request's prefetched blocks are owned by the request (PrefetchedBlocks).
using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Platform.Core.Hashing;
using Platform.Core.KvEvents;
using Platform.KvCache;

namespace Platform.Engine.KvCache;

/// <summary>A block that became full and computed: its device block, hash and parent hash.</summary>
public readonly record struct ComputedBlock(int Block, ulong Hash, ulong Parent);

public sealed class KvTierService : IAsyncDisposable
{
    private const int MaxRemotePutsInFlight = 4;
    /// <summary>
    /// Blocks loaded into the pools per transfer: bounds the decode buffers kept for host reads (32 raw
    /// blocks, e.g. 29 MB for a 7B bfloat16 model's 0.9 MB blocks) while one copy carries many blocks.
    /// </summary>
    private const int LoadBatchBlocks = 32;
    private readonly PagedKvStore _store;
    private readonly ConcurrentQueue<byte[]> _rawBuffers = new();
    private readonly Channel<WriteItem> _writes = Channel.CreateUnbounded<WriteItem>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly ConcurrentQueue<KvEvent> _pendingEvents = new();
    // Engine-thread scratch for batched transfers (KvTierTransfer).
    private readonly List<ComputedBlock> _outBlocks = [];
    private readonly List<int> _outIds = [];
    private readonly List<byte[]> _outBuffers = [];
    private readonly List<byte[]> _inSources = [];
    private readonly List<bool> _inFromHost = [];
    private readonly List<byte[]> _hostScratch = [];
    private readonly int _maxBuffers;
    private readonly Task _writer;
    private readonly ILogger _logger;
    private int _allocatedBuffers;
    private int _remotePutsInFlight;
    private int _queued;
    private readonly int _putBatchBlocks;
    private readonly Dictionary<ulong, ulong> _remoteKnown = [];
    private readonly Queue<ulong> _remoteOrder = new();
    private const int MaxRemoteKnown = 1 << 18;

    private readonly record struct WriteItem(ulong Hash, ulong Parent, byte[] Raw);

    public KvTierService(KvBlockLayout layout, PagedKvStore store, HostKvTier host, RedisKvTier? remote, KvTierMetrics metrics, int writeQueueBlocks, int putBatchBlocks, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(store);
        if (layout.RawBytes != store.BytesPerBlock)
            throw new ArgumentException($"a KV block of the tier's layout holds {layout.RawBytes} bytes but the engine's pools hold {store.BytesPerBlock} ({layout.RawDtype} vs {store.Dtype}); the layout must use the pools' dtype.");
        Layout = layout;
        _store = store;
        Host = host;
        Remote = remote;
        Metrics = metrics;
        _maxBuffers = writeQueueBlocks;
        _putBatchBlocks = putBatchBlocks;
        _logger = logger;
        Transfer = new KvTierTransfer(store);
        metrics.Gauge("kv_tier_host_bytes", "By", "Bytes of encoded KV blocks in the host tier", () => host.UsedBytes);
        metrics.Gauge("kv_tier_host_blocks", "{block}", "KV blocks in the host tier", () => host.Count);
        metrics.Gauge("kv_tier_write_queue_blocks", "{block}", "Computed blocks waiting to be written to host/remote", () => Volatile.Read(ref _queued));
        _writer = Task.Run(WriterLoopAsync);
    }

    public KvBlockLayout Layout { get; }
    /// <summary>How blocks move between the pools and host buffers (direct memcpy on CPU pools, else staged).</summary>
    public KvTierTransfer Transfer { get; }
    public HostKvTier Host { get; }
    public RedisKvTier? Remote { get; }
    public KvTierMetrics Metrics { get; }
    /// <summary>Called (from any thread) when tier events are waiting to be drained by the engine thread.</summary>
    public Action? EventsPending { get; set; }

    // ---- engine thread: write-through ----

    /// <summary>
    /// Queues newly computed full blocks for host and remote (engine thread: one batched copy out of the
    /// pools, never a wait). Blocks for which no raw buffer is free (the writer is behind) are dropped.
    /// </summary>
    public void OnBlocksComputed(ReadOnlySpan<ComputedBlock> blocks)
    {
        _outBlocks.Clear();
        _outBuffers.Clear();
        foreach (var computed in blocks)
        {
            if (!_rawBuffers.TryDequeue(out var raw))
            {
                if (_allocatedBuffers >= _maxBuffers)
                {
                    Metrics.Dropped("queue_full");
                    continue;
                }
                _allocatedBuffers++;
                raw = GC.AllocateUninitializedArray<byte>(Layout.RawBytes);
            }
            _outBlocks.Add(computed);
            _outBuffers.Add(raw);
        }
        if (_outBlocks.Count == 0) return;
        _outIds.Clear();
        foreach (var computed in _outBlocks) _outIds.Add(computed.Block);
        Transfer.CopyOut(CollectionsMarshal.AsSpan(_outIds), _outBuffers);
        for (int i = 0; i < _outBlocks.Count; i++)
        {
            Interlocked.Increment(ref _queued);
            _writes.Writer.TryWrite(new WriteItem(_outBlocks[i].Hash, _outBlocks[i].Parent, _outBuffers[i]));
        }
        _outBuffers.Clear();
    }

    // ---- engine thread: loading a prefix ----

    /// <summary>
    /// Extends the request's prefix beyond the device hits: each next block from the host tier, else
    /// from the request's remote prefetch, into a newly allocated device block registered in the prefix
    /// cache. Stops at the first block neither tier has (or when the pool is short). Blocks go into the
    /// pools in batches of up to LoadBatchBlocks (KvTierTransfer: one copy per batch off the CPU).
    /// </summary>
    public void LoadPrefix(KvSequence request, BlockPool pool, List<int> scratchBlocks, int usable)
    {
        var prefetch = request.Prefetch;
        int i = request.Blocks.Count;
        bool more = true;
        while (more && i < usable)
        {
            _inSources.Clear();
            _inFromHost.Clear();
            int hostBuffers = 0;
            while (_inSources.Count < LoadBatchBlocks && i + _inSources.Count < usable)
            {
                int index = i + _inSources.Count;
                ulong hash = request.BlockHashes[index];
                // Blocks prefetched for this request came from the remote store (they were also copied to host memory on the way).
                if (prefetch is not null && prefetch.TryGet(index, out var fetched))
                {
                    _inSources.Add(fetched);
                    _inFromHost.Add(false);
                    continue;
                }
                var buffer = HostScratch(hostBuffers);
                if (!Host.TryRead(hash, (Layout, hash, buffer), static (encoded, s) => BlockCodec.Decode(s.Layout, s.hash, encoded, s.buffer, out _), out var status))
                {
                    more = false;
                    break;
                }
                if (status != DecodeStatus.Ok)
                {
                    Metrics.Rejected("host", status);
                    Host.Remove(hash);
                    ulong parent = index == 0 ? BlockHasher.RootParent : request.BlockHashes[index - 1];
                    _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockRemoved, hash, parent, KvTier.Host));
                    more = false;
                    break;
                }
                hostBuffers++;
                _inSources.Add(buffer);
                _inFromHost.Add(true);
            }
            if (_inSources.Count == 0) break;

            // One block at a time, so a pool short of the whole batch still takes what fits.
            scratchBlocks.Clear();
            while (scratchBlocks.Count < _inSources.Count && pool.TryAllocate(1, scratchBlocks)) { }
            int loaded = scratchBlocks.Count;
            if (loaded < _inSources.Count) more = false;
            if (loaded == 0) break;
            Transfer.CopyIn(CollectionsMarshal.AsSpan(scratchBlocks), _inSources);
            for (int n = 0; n < loaded; n++, i++)
            {
                int block = scratchBlocks[n];
                pool.Cache(block, request.BlockHashes[i], i == 0 ? BlockHasher.RootParent : request.BlockHashes[i - 1]);
                request.Blocks.Add(block);
                if (_inFromHost[n]) request.LookupHostBlocks++;
                else request.LookupRemoteBlocks++;
            }
        }
        _inSources.Clear();
        Metrics.Hit("host", request.LookupHostBlocks);
        Metrics.Hit("remote", request.LookupRemoteBlocks);
    }

    /// <summary>The <paramref name="index"/>th buffer blocks read from host memory are decoded into (kept for reuse).</summary>
    private byte[] HostScratch(int index)
    {
        while (_hostScratch.Count <= index) _hostScratch.Add(GC.AllocateUninitializedArray<byte>(Layout.RawBytes));
        return _hostScratch[index];
    }

    /// <summary>
    /// Moves tier events into the engine's event log (engine thread). The remote store's contents are
    /// only known by what this worker wrote or read (keys expire by TTL on their own), so remote
    /// presence is tracked for the newest MaxRemoteKnown blocks; older ones are reported removed.
    /// </summary>
    public void DrainEvents(KvEventLog log)
    {
        while (_pendingEvents.TryDequeue(out var e))
        {
            if (e.Tier == KvTier.Remote && e.Kind == KvEventKind.BlockStored)
            {
                if (!_remoteKnown.TryAdd(e.BlockHash, e.ParentHash)) continue;
                _remoteOrder.Enqueue(e.BlockHash);
                if (_remoteOrder.Count > MaxRemoteKnown)
                {
                    ulong old = _remoteOrder.Dequeue();
                    if (_remoteKnown.Remove(old, out ulong oldParent)) log.Record(KvEventKind.BlockRemoved, old, oldParent, KvTier.Remote);
                }
            }
            log.Record(e.Kind, e.BlockHash, e.ParentHash, e.Tier);
        }
    }

    /// <summary>Every block held below the device, for a subscriber's snapshot (engine thread, after DrainEvents).</summary>
    public List<(ulong Hash, ulong Parent, KvTier Tier)> SnapshotTiers()
    {
        var list = new List<(ulong, ulong, KvTier)>();
        foreach (var (h, p) in Host.Snapshot()) list.Add((h, p, KvTier.Host));
        foreach (var (h, p) in _remoteKnown) list.Add((h, p, KvTier.Remote));
        return list;
    }

    // ---- caller's flow: remote prefetch before queueing ----

    /// <summary>
    /// Fetches from the remote store the blocks of <paramref name="hashes"/> (first <paramref name="usable"/>)
    /// that follow the host tier's run, within the operation budget. Null when there is nothing to fetch,
    /// the store is skipped (breaker open) or it had nothing.
    /// </summary>
    public async Task<PrefetchedBlocks?> PrefetchAsync(IReadOnlyList<ulong> hashes, int usable, CancellationToken cancellationToken)
    {
        if (Remote is null || Remote.BreakerOpen) return null;
        int start = 0;
        while (start < usable && Host.Contains(hashes[start])) start++;
        if (start >= usable) return null;
        var raw = new List<byte[]>();
        try
        {
            await Remote.FetchPrefixAsync(hashes, start, usable - start, (index, encoded) =>
            {
                var buffer = ArrayPool<byte>.Shared.Rent(Layout.RawBytes);
                var status = BlockCodec.Decode(Layout, hashes[index], encoded.Span, buffer, out ulong parent);
                if (status != DecodeStatus.Ok)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    Metrics.Rejected("remote", status);
                    return false;
                }
                raw.Add(buffer);
                _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockStored, hashes[index], parent, KvTier.Remote));
                // Read-through: keep it in host memory too, when it is stored in our own format.
                if (encoded.Length == Host.SlotBytes && Host.Put(hashes[index], parent, encoded.Span, out var evicted))
                {
                    Host.MarkRemote(hashes[index]);
                    _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockStored, hashes[index], parent, KvTier.Host));
                    if (evicted.Evicted) _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockRemoved, evicted.Hash, evicted.Parent, KvTier.Host));
                }
                return true;
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            foreach (var b in raw) ArrayPool<byte>.Shared.Return(b);
            throw;
        }
        if (raw.Count > 0) EventsPending?.Invoke();
        return raw.Count == 0 ? null : new PrefetchedBlocks(start, raw);
    }

    // ---- writer task ----

    private async Task WriterLoopAsync()
    {
        var reader = _writes.Reader;
        int batchBlocks = Remote is null ? 64 : _putBatchBlocks;
        var encoded = new List<(ulong Hash, ReadOnlyMemory<byte> Encoded)>(batchBlocks);
        var rented = new List<byte[]>(batchBlocks);
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            encoded.Clear();
            rented.Clear();
            bool sendRemote = Remote is not null && !Remote.BreakerOpen && Volatile.Read(ref _remotePutsInFlight) < MaxRemotePutsInFlight;
            int written = 0;
            while (encoded.Count < batchBlocks && reader.TryRead(out var item))
            {
                try
                {
                    var buffer = ArrayPool<byte>.Shared.Rent(Layout.EncodedBytes);
                    int n = BlockCodec.Encode(Layout, item.Hash, item.Parent, item.Raw, buffer);
                    if (Host.Put(item.Hash, item.Parent, buffer.AsSpan(0, n), out var evicted))
                    {
                        written++;
                        _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockStored, item.Hash, item.Parent, KvTier.Host));
                    }
                    if (evicted.Evicted) _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockRemoved, evicted.Hash, evicted.Parent, KvTier.Host));
                    if (sendRemote && n <= Remote!.MaxValueBytes && !Host.IsMarkedRemote(item.Hash))
                    {
                        encoded.Add((item.Hash, buffer.AsMemory(0, n)));
                        rented.Add(buffer);
                    }
                    else
                    {
                        if (Remote is not null && n > Remote.MaxValueBytes) Metrics.Dropped("too_large");
                        ArrayPool<byte>.Shared.Return(buffer);
                    }
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException)
                {
                    LogWriteFailed(_logger, e);
                }
                finally
                {
                    _rawBuffers.Enqueue(item.Raw);
                    Interlocked.Decrement(ref _queued);
                }
            }
            Metrics.Written("host", written);
            if (encoded.Count > 0)
            {
                Interlocked.Increment(ref _remotePutsInFlight);
                _ = PutRemoteAsync([.. encoded], [.. rented]);
            }
            if (!_pendingEvents.IsEmpty) EventsPending?.Invoke();
        }
    }

    private async Task PutRemoteAsync((ulong Hash, ReadOnlyMemory<byte> Encoded)[] blocks, byte[][] buffers)
    {
        try
        {
            int stored = await Remote!.PutAsync(blocks).ConfigureAwait(false);
            if (stored == blocks.Length)
            {
                foreach (var (hash, encoded) in blocks)
                {
                    Host.MarkRemote(hash);
                    ulong parent = BlockCodec.ReadParentHash(encoded.Span);
                    _pendingEvents.Enqueue(new KvEvent(0, KvEventKind.BlockStored, hash, parent, KvTier.Remote));
                }
                EventsPending?.Invoke();
            }
        }
        finally
        {
            // The multiplexer has written (or given up on) every value once the put completed.
            foreach (var b in buffers) ArrayPool<byte>.Shared.Return(b);
            Interlocked.Decrement(ref _remotePutsInFlight);
        }
    }

    /// <summary>Waits until every queued block has been written to host (tests, benchmarks).</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        while (Volatile.Read(ref _queued) > 0 || Volatile.Read(ref _remotePutsInFlight) > 0)
            await Task.Delay(5, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        _writes.Writer.TryComplete();
        await _writer.ConfigureAwait(false);
        while (Volatile.Read(ref _remotePutsInFlight) > 0) await Task.Delay(5).ConfigureAwait(false);
        if (Remote is not null) await Remote.DisposeAsync().ConfigureAwait(false);
    }

    private static readonly Action<ILogger, Exception?> WriteFailed =
        LoggerMessage.Define(LogLevel.Warning, new EventId(1, "KvTierWriteFailed"), "Writing a KV block to the host tier failed");

    private static void LogWriteFailed(ILogger logger, Exception e) => WriteFailed(logger, e);
}

