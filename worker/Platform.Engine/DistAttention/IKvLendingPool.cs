// What the creditor side of DistAttention (KvLender) needs of the engine that
// owns the KV pool: lend and return blocks on the engine thread, write a
// debtor's K/V into lent slots and run attention over them. LlmEngine
// implements it; KvLender depends on this, not on the engine, so the
// DistAttention namespace stays below the engine.
using Platform.Core.Models;

namespace Platform.Engine.DistAttention;

/// <summary>Blocks taken for a peer (null: refused) and what this worker could still lend.</summary>
public readonly record struct LendResult(int[]? Blocks, int LendableBlocks);

public interface IKvLendingPool
{
    ModelConfig Config { get; }
    /// <summary>The model fingerprint's id: a debtor serving another model is refused.</summary>
    string FingerprintId { get; }
    /// <summary>False when this worker does not lend (DistAttention off).</summary>
    bool LendsKvBlocks { get; }
    int BlockSize { get; }
    /// <summary>The lease a reservation gets when its debtor writes to it.</summary>
    int LeaseMs { get; }
    int KvBlocksFor(int tokens);
    /// <summary>Takes <paramref name="blocks"/> blocks for a peer if this worker can spare them (0: only asks how many it could).</summary>
    Task<LendResult> LendBlocksAsync(int blocks);
    void ReturnLentBlocks(int[] blocks);
    /// <summary>Stores a debtor's float32 K/V rows in lent slots, in the pool's dtype.</summary>
    void WriteLentKv(int layer, ReadOnlySpan<long> slots, ReadOnlySpan<float> keys, ReadOnlySpan<float> values);
    /// <summary>Attention partials over lent slots (see PagedKvStore.PartialAttention).</summary>
    unsafe void LentKvAttention(int layer, float* queries, long* slots, int slotCount, int* offsets, int* lengths, int count,
        int heads, int kvHeads, int headDim, float scale, float* output, float* logSumExp);
}
