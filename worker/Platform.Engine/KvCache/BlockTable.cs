// A sequence's block table read as KV slots: position p lives in slot
// blocks[p / blockSize] * blockSize + p % blockSize of the paged pools. The
// model's step, DistAttention's local share and a lender's reservation all
// need the slots of a whole context, so they are made here once, block by
// block. The per-position loop (a division and an interface call per key) and
// the copy after it cost 0.4-0.7 ms per 32K sequence on every decode step
// (docs/engine.md, "Decode step, thirteenth session").
namespace Platform.Engine.KvCache;

public static class BlockTable
{
    /// <summary>The KV slots of positions 0 .. <paramref name="tokens"/>-1 under the block table <paramref name="blocks"/>.</summary>
    public static long[] Slots(IReadOnlyList<int> blocks, int blockSize, int tokens)
    {
        // Left unzeroed: every element is written below.
        var slots = GC.AllocateUninitializedArray<long>(tokens);
        for (int b = 0, p = 0; p < tokens; b++)
        {
            long first = (long)blocks[b] * blockSize;
            int n = Math.Min(blockSize, tokens - p);
            for (int i = 0; i < n; i++) slots[p + i] = first + i;
            p += n;
        }
        return slots;
    }
}
