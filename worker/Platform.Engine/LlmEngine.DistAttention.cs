// The engine's DistAttention seams. As debtor: a request whose KV cannot fit in
// this worker gets a plan (local share here, the rest reserved on peers) before
// it is queued, and its remote-phase steps run through LlamaModel.ForwardRemote.
// When a creditor fails, its segment is re-planned: the same positions are
// reserved on another peer, the KV already computed there is recomputed from
// the tokens (prefill chunks through ForwardRemote, logits dropped) and the
// step is retried once; when that cannot be done only that sequence ends, with
// an error the router answers by migrating the request. As creditor: blocks are lent from
// the pool on the engine thread, counted apart from the blocks of local
// requests, and given back when the reservation ends.
using System.Runtime.CompilerServices;
using Platform.Engine.DistAttention;
using Platform.Engine.KvCache;
using Platform.Engine.Scheduling;

namespace Platform.Engine;

public sealed partial class LlmEngine : IKvLendingPool
{
    private readonly List<int> _lendScratch = [];
    private int _lentBlocks;
    private int _borrowingSequences;
    private long _borrowedBlocks;
    private long _remoteAttentionTicks;
    private long _replans;
    private long _recomputedTokens;

    /// <summary>Set by the host to let requests that do not fit borrow KV memory from peers (null: they are refused).</summary>
    public DistAttentionPlanner? DistAttention { get; set; }

    internal TorchSharp.torch.ScalarType Dtype => _model.Dtype;

    // ---- creditor side (IKvLendingPool, used by KvLender) ----

    string IKvLendingPool.FingerprintId => Fingerprint.Id;
    bool IKvLendingPool.LendsKvBlocks => Options.LendKvBlocks;
    int IKvLendingPool.BlockSize => Options.BlockSize;
    int IKvLendingPool.LeaseMs => Options.DistLeaseMs;
    int IKvLendingPool.KvBlocksFor(int tokens) => _kv.BlocksFor(tokens);

    void IKvLendingPool.WriteLentKv(int layer, ReadOnlySpan<long> slots, ReadOnlySpan<float> keys, ReadOnlySpan<float> values) =>
        _kvStore.WriteRows(layer, slots, keys, values);

    unsafe void IKvLendingPool.LentKvAttention(int layer, float* queries, long* slots, int slotCount, int* offsets, int* lengths, int count,
        int heads, int kvHeads, int headDim, float scale, float* output, float* logSumExp) =>
        _kvStore.PartialAttention(layer, queries, slots, slotCount, offsets, lengths, count, heads, kvHeads, headDim, scale, output, logSumExp);

    /// <summary>DistAttention counters: blocks lent to peers, sequences and blocks borrowed from them, time waiting for them.</summary>
    public DistAttentionStats GetDistAttentionStats() => new(Volatile.Read(ref _lentBlocks), Volatile.Read(ref _borrowingSequences),
        Interlocked.Read(ref _borrowedBlocks), TimeSpan.FromTicks(Interlocked.Read(ref _remoteAttentionTicks)),
        Interlocked.Read(ref _replans), Interlocked.Read(ref _recomputedTokens));

    /// <summary>On the engine thread: takes <paramref name="blocks"/> blocks for a peer if this worker can spare them.</summary>
    Task<LendResult> IKvLendingPool.LendBlocksAsync(int blocks)
    {
        var tcs = new TaskCompletionSource<LendResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            var pool = _kv.Pool;
            int keep = (int)Math.Ceiling(pool.TotalBlocks * Options.LendReserveFraction);
            foreach (var r in _scheduler.Waiting) keep += Math.Max(0, _kv.LocalBlocksFor(r) - r.Blocks.Count);
            int lendable = Math.Max(0, pool.FreeBlocks - keep);
            if (blocks <= 0 || blocks > lendable)
            {
                tcs.SetResult(new LendResult(null, lendable));
                return;
            }
            _lendScratch.Clear();
            if (!pool.TryAllocate(blocks, _lendScratch))
            {
                tcs.SetResult(new LendResult(null, lendable));
                return;
            }
            _lentBlocks += blocks;
            RefreshStats();
            tcs.SetResult(new LendResult([.. _lendScratch], lendable - blocks));
        });
        return tcs.Task;
    }

    void IKvLendingPool.ReturnLentBlocks(int[] blocks) => Enqueue(() =>
    {
        _kv.Pool.Release(blocks);
        _lentBlocks -= blocks.Length;
        RefreshStats();
    });

    /// <summary>Plans the request's remote share, then queues it like any other.</summary>
    private async IAsyncEnumerable<GenerationChunk> GenerateDistributedAsync(EngineRequest request, int totalTokens,
        System.Threading.Channels.ChannelReader<GenerationChunk> reader, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        int localTokens = Math.Min(totalTokens, (int)(_kvStore.NumBlocks * Options.DistLocalFraction) * Options.BlockSize);
        try
        {
            request.Dist = await DistAttention!.PlanAsync(request.Id, Fingerprint.Id, localTokens, totalTokens, Options.BlockSize, cancellationToken)
                .ConfigureAwait(false);
        }
        catch (DistAttentionRefusedException e)
        {
            throw new EngineRequestException(e.Message);
        }
        Interlocked.Increment(ref _borrowingSequences);
        Interlocked.Add(ref _borrowedBlocks, _kv.BlocksFor(request.Dist.RemoteTokens));
        try
        {
            Enqueue(() => _scheduler.Add(request));
            await foreach (var chunk in ReadAsync(request, reader, cancellationToken).ConfigureAwait(false)) yield return chunk;
        }
        finally
        {
            Interlocked.Decrement(ref _borrowingSequences);
            Interlocked.Add(ref _borrowedBlocks, -_kv.BlocksFor(request.Dist.RemoteTokens));
            Interlocked.Add(ref _remoteAttentionTicks, request.Dist.RemoteAttentionTime.Ticks);
        }
    }

    /// <summary>
    /// Runs a remote-phase step of one sequence. When a creditor fails, its segments are re-planned and the step
    /// is retried once; null (and the sequence ended with the reason) when that cannot be done or fails again.
    /// </summary>
    private float[]? ForwardRemote(ScheduledRequest s)
    {
        var r = s.Request;
        var local = BlockTable.Slots(r.Blocks, Options.BlockSize, r.Dist!.LocalTokens);
        string reason;
        try
        {
            return ForwardRemoteChunk(r, r.NumComputed, s.NumTokens, local);
        }
        catch (RemoteKvException failure)
        {
            reason = failure.Message;
            if (ReplanFailedSegments(r, local, failure) is { } replanError)
            {
                reason += "; " + replanError;
            }
            else
            {
                try
                {
                    return ForwardRemoteChunk(r, r.NumComputed, s.NumTokens, local);
                }
                catch (RemoteKvException again)
                {
                    reason += "; after re-planning it failed again: " + again.Message;
                }
            }
        }
        LogRemoteFailed(_logger, r.Id, reason);
        FinishWithError(r, reason);
        return null;
    }

    /// <summary>Positions [start, start + count) of a borrowing sequence; the float32 logits of the last one.</summary>
    private float[] ForwardRemoteChunk(EngineRequest r, int start, int count, long[] localSlots)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var logits = _model.ForwardRemote(r.Tokens, start, count, localSlots, r.Dist!, _kvStore);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(logits.contiguous().bytes).ToArray();
    }

    /// <summary>
    /// After a creditor failed: reserves each segment it held on another peer (never a failed one) and recomputes
    /// the KV of the positions of it already computed, [segment start, NumComputed), in prefill chunks. The KV of
    /// a position depends only on the tokens up to it, so the recomputed rows equal the lost ones (up to float
    /// rounding of the chunking) and nothing after the segment changes. Runs on the engine thread, which waits
    /// for it. Returns null when the sequence can go on, otherwise why it cannot.
    /// </summary>
    private string? ReplanFailedSegments(EngineRequest r, long[] localSlots, RemoteKvException failure)
    {
        var dist = r.Dist!;
        var failedPeers = failure.FailedSegments.Select(f => f.Peer).ToHashSet(StringComparer.Ordinal);
        // Every segment of a failed creditor is lost, also those this layer did not ask.
        var lost = dist.Segments.Where(g => failedPeers.Contains(g.Peer)).ToList();
        if (lost.Count == 0 || DistAttention is not { } planner) return "the failed creditor is not known, so nothing could be re-planned";
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        foreach (var segment in lost)
        {
            RemoteSegment replacement;
            try
            {
                replacement = planner.ReserveSegmentAsync(dist.SequenceId, Fingerprint.Id, segment.Start, segment.Tokens, failedPeers, CancellationToken.None)
                    .GetAwaiter().GetResult();
            }
            catch (DistAttentionRefusedException e)
            {
                return e.Message;
            }
            dist.ReplaceSegment(segment, replacement);
            int end = (int)Math.Min(segment.Start + segment.Tokens, r.NumComputed);
            int recomputed = 0;
            for (int p = (int)segment.Start; p < end; p += Options.MaxBatchTokens)
            {
                int count = Math.Min(Options.MaxBatchTokens, end - p);
                try
                {
                    ForwardRemoteChunk(r, p, count, localSlots);
                }
                catch (RemoteKvException e)
                {
                    return $"recomputing positions {p}..{p + count - 1} on {replacement.Peer} failed: {e.Message}";
                }
                recomputed += count;
            }
            Interlocked.Increment(ref _replans);
            Interlocked.Add(ref _recomputedTokens, recomputed);
            LogReplanned(_logger, r.Id, segment.Peer, segment.Start, segment.Start + segment.Tokens - 1, replacement.Peer, recomputed,
                System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
        return null;
    }

    /// <summary>
    /// After the local batch: runs the DistAttention sequences one by one and appends the logits of those that
    /// sample to <paramref name="logits"/>. A failed one has already been ended and is left out of the step.
    /// </summary>
    private (float[] Logits, IReadOnlyList<ScheduledRequest> Committed) ForwardRemoteSequences(List<ScheduledRequest> remote,
        IReadOnlyList<ScheduledRequest> scheduled, List<EngineRequest> sampling, float[] logits)
    {
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
        return ([.. rows], committed);
    }

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Warning, Message = "DistAttention sequence {Request} failed: {Reason}")]
    private static partial void LogRemoteFailed(Microsoft.Extensions.Logging.ILogger logger, string request, string reason);

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Warning,
        Message = "DistAttention sequence {Request} lost KV peer {FailedPeer} holding positions {Start}..{End}: re-planned onto {NewPeer}, {RecomputedTokens} positions recomputed ({ElapsedMs:0} ms since the failure)")]
    private static partial void LogReplanned(Microsoft.Extensions.Logging.ILogger logger, string request, string failedPeer, long start, long end,
        string newPeer, int recomputedTokens, double elapsedMs);
}
