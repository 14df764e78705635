// A sequence's block table read as KV slots: position p lives in slot
// blocks[p / blockSize] * blockSize + p % blockSize of the paged pools. The
// model's step, DistAttention's local share and a lender's reservation all
// need the slots of a whole context, so they are made here once, block by
// block (a division and an interface call per position cost ~0.1 ms per step
// of a 32K context, on the hot path of every decode step).
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
