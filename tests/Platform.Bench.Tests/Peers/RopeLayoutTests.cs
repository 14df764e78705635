// The q/k row permutation between Hugging Face's rotate-half RoPE layout and the interleaved pairs of
// llama.cpp and llama2.c: a hand-worked case, and the round trip on random shapes.
using Platform.Bench.Peers;

namespace Platform.Bench.Tests.Peers;

public sealed class RopeLayoutTests
{
    [Fact]
    public void Rotate_half_pairs_become_adjacent_rows_head_by_head()
    {
        // Two heads of 4 rows, one column: rotate-half pairs rows (0,2), (1,3) in each head.
        float[] rotateHalf = [0, 1, 2, 3, 10, 11, 12, 13];
        Assert.Equal([0f, 2, 1, 3, 10, 12, 11, 13], RopeLayout.RotateHalfToInterleaved(rotateHalf, heads: 2, headDim: 4, columns: 1));
    }

    [Fact]
    public void Whole_rows_move_together()
    {
        // One head of 4 rows of 2 columns.
        float[] rotateHalf = [0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f];
        Assert.Equal([0f, 0.5f, 2, 2.5f, 1, 1.5f, 3, 3.5f], RopeLayout.RotateHalfToInterleaved(rotateHalf, heads: 1, headDim: 4, columns: 2));
    }

    [Theory]
    [InlineData(1, 2, 1)]
    [InlineData(4, 16, 3)]
    [InlineData(2, 64, 5)]
    [InlineData(3, 128, 2)]
    public void Round_trip_restores_every_value(int heads, int headDim, int columns)
    {
        var rng = new Random(heads * 1000 + headDim);
        float[] weight = [.. Enumerable.Range(0, heads * headDim * columns).Select(_ => (float)rng.NextDouble())];
        var interleaved = RopeLayout.RotateHalfToInterleaved(weight, heads, headDim, columns);
        Assert.Equal(weight.Order(), interleaved.Order());
        Assert.Equal(weight, RopeLayout.InterleavedToRotateHalf(interleaved, heads, headDim, columns));
    }

    [Fact]
    public void Odd_head_dimensions_and_wrong_sizes_are_refused()
    {
        Assert.Throws<ArgumentException>(() => RopeLayout.RotateHalfToInterleaved(new float[6], 2, 3, 1));
        Assert.Throws<ArgumentException>(() => RopeLayout.RotateHalfToInterleaved(new float[7], 1, 4, 2));
    }
}
