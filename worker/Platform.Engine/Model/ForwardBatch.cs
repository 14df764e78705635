// The input of one model step: the flattened tokens of every scheduled
// sequence, their positions and KV slots, and per sequence the slots of its
// whole context (for attention) and which rows need logits.
using Platform.Engine.KvCache;

namespace Platform.Engine.Model;

/// <param name="TokenStart">First row of this sequence in the flattened batch.</param>
/// <param name="NumTokens">Rows this step (1 for decode, a chunk for prefill).</param>
/// <param name="ContextSlots">KV slots of positions 0 .. ContextLength-1 (the new tokens included).</param>
public sealed record SequenceSlice(int TokenStart, int NumTokens, long[] ContextSlots)
{
    public int ContextLength => ContextSlots.Length;
}

public sealed class ForwardBatch
{
    public List<int> InputIds { get; } = [];
    public List<long> Positions { get; } = [];
    public List<long> Slots { get; } = [];
    public List<SequenceSlice> Sequences { get; } = [];
    /// <summary>Rows whose logits are returned, in order.</summary>
    public List<int> LogitRows { get; } = [];

    public int NumTokens => InputIds.Count;

    /// <summary>Adds <paramref name="count"/> tokens of a sequence starting at position <paramref name="start"/>.</summary>
    public SequenceSlice AddSequence(IReadOnlyList<int> tokens, int start, int count, IReadOnlyList<int> blocks, int blockSize)
    {
        int row = InputIds.Count;
        int end = start + count;
        var context = BlockTable.Slots(blocks, blockSize, end);
        for (int p = start; p < end; p++)
        {
            InputIds.Add(tokens[p]);
            Positions.Add(p);
            Slots.Add(context[p]);
        }
        var slice = new SequenceSlice(row, count, context);
        Sequences.Add(slice);
        return slice;
    }
}
