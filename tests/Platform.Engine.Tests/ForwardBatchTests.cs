// ForwardBatch.AddSequence: the KV slot of every context position (block table × block size + offset in the
// block), checked against the position-by-position formula over ragged block tables and partial last blocks.
using Platform.Engine.Model;

namespace Platform.Engine.Tests;

public class ForwardBatchTests
{
    [Theory]
    [InlineData(16, 0, 1)]
    [InlineData(16, 0, 37)]
    [InlineData(16, 47, 1)]
    [InlineData(16, 48, 1)]
    [InlineData(1, 5, 3)]
    [InlineData(32, 100, 29)]
    public void Context_slots_follow_the_block_table(int blockSize, int start, int count)
    {
        int end = start + count;
        var random = new Random(end * 31 + blockSize);
        // Blocks in a shuffled order, with one more in the table than the context needs (as a scheduler allocates ahead).
        var blocks = Enumerable.Range(0, (end + blockSize - 1) / blockSize + 1).Select(b => b * 7 + 3).OrderBy(_ => random.Next()).ToArray();
        var tokens = Enumerable.Range(1000, end).ToArray();

        var batch = new ForwardBatch();
        batch.AddSequence([5, 6], 0, 2, [9], 4); // an earlier sequence: the second's rows follow its rows
        var slice = batch.AddSequence(tokens, start, count, blocks, blockSize);

        var expected = Enumerable.Range(0, end).Select(p => (long)blocks[p / blockSize] * blockSize + p % blockSize).ToArray();
        Assert.Equal(expected, slice.ContextSlots);
        Assert.Equal(end, slice.ContextLength);
        Assert.Equal(2, slice.TokenStart);
        Assert.Equal(expected[start..], batch.Slots.Skip(2));
        Assert.Equal(tokens[start..], batch.InputIds.Skip(2));
        Assert.Equal(Enumerable.Range(start, count).Select(p => (long)p), batch.Positions.Skip(2));
    }
}
