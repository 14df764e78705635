// The engine's DistAttention seams. As debtor: a request whose KV cannot fit in
// this worker gets a plan (local share here, the rest reserved on peers) before
// it is queued, and its remote-phase steps run through LlamaModel.ForwardRemote;
// a creditor failure ends only that sequence. As creditor: blocks are lent from
// the pool on the engine thread, counted apart from the blocks of local
// requests, and given back when the reservation ends.
using System.Runtime.CompilerServices;
using Platform.Engine.DistAttention;
using Platform.Engine.Scheduling;

namespace Platform.Engine;

public sealed partial class LlmEngine : IKvLendingPool
{
    private readonly List<int> _lendScratch = [];
    private int _lentBlocks;
    private int _borrowingSequences;
    private long _borrowedBlocks;
    private long _remoteAttentionTicks;

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
        Interlocked.Read(ref _borrowedBlocks), TimeSpan.FromTicks(Interlocked.Read(ref _remoteAttentionTicks)));

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

    /// <summary>Runs a remote-phase step of one sequence; null (and the sequence ended with the reason) when a creditor failed.</summary>
    private float[]? ForwardRemote(ScheduledRequest s)
    {
        var r = s.Request;
        var dist = r.Dist!;
        var local = new long[dist.LocalTokens];
        for (int p = 0; p < local.Length; p++) local[p] = (long)r.Blocks[p / Options.BlockSize] * Options.BlockSize + p % Options.BlockSize;
        try
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            var logits = _model.ForwardRemote(r.Tokens, r.NumComputed, s.NumTokens, local, dist, _kvStore);
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(logits.contiguous().bytes).ToArray();
        }
        catch (RemoteKvException e)
        {
            LogRemoteFailed(_logger, r.Id, e.Message);
            FinishWithError(r, e.Message);
            return null;
        }
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
}
