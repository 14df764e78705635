// The paged decode kernel against a double-precision softmax attention over the
// same scattered slots: several sequences, GQA groups, head sizes that are and
// are not multiples of the vector width, one-token contexts.
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

public sealed unsafe class PagedAttentionTests
{
    [Theory]
    [InlineData(1, 4, 4, 64, new[] { 1 })]
    [InlineData(3, 8, 2, 64, new[] { 5, 17, 33 })]
    [InlineData(2, 6, 3, 12, new[] { 40, 3 })]
    [InlineData(4, 32, 4, 64, new[] { 100, 1, 64, 257 })]
    public void Matches_reference_attention(int sequences, int heads, int kvHeads, int headDim, int[] lengths)
    {
        var rng = new Random(sequences * 31 + headDim);
        int totalSlots = lengths.Sum() + 50;
        var keys = RandomArray(rng, totalSlots * kvHeads * headDim);
        var values = RandomArray(rng, totalSlots * kvHeads * headDim);
        var query = RandomArray(rng, sequences * heads * headDim);
        // Each sequence gets distinct, shuffled slots.
        var pool = Enumerable.Range(0, totalSlots).OrderBy(_ => rng.Next()).ToArray();
        var slots = new long[lengths.Sum()];
        var offsets = new int[sequences];
        int used = 0;
        for (int s = 0; s < sequences; s++)
        {
            offsets[s] = used;
            for (int p = 0; p < lengths[s]; p++) slots[used + p] = pool[used + p];
            used += lengths[s];
        }
        var output = new float[sequences * heads * headDim];
        float scale = 1f / MathF.Sqrt(headDim);
        fixed (float* q = query) fixed (float* k = keys) fixed (float* v = values) fixed (float* o = output)
        fixed (long* sl = slots) fixed (int* off = offsets) fixed (int* len = lengths)
        {
            PagedAttention.Decode(q, k, v, sl, off, len, sequences, heads, kvHeads, headDim, scale, o);
        }

        int groups = heads / kvHeads;
        for (int s = 0; s < sequences; s++)
            for (int h = 0; h < heads; h++)
            {
                int kvh = h / groups;
                var scores = new double[lengths[s]];
                for (int p = 0; p < lengths[s]; p++)
                {
                    long slot = slots[offsets[s] + p];
                    double dot = 0;
                    for (int i = 0; i < headDim; i++) dot += query[(s * heads + h) * headDim + i] * keys[(slot * kvHeads + kvh) * headDim + i];
                    scores[p] = dot * scale;
                }
                double max = scores.Max(), sum = scores.Sum(x => Math.Exp(x - max));
                for (int i = 0; i < headDim; i++)
                {
                    double expected = 0;
                    for (int p = 0; p < lengths[s]; p++)
                        expected += Math.Exp(scores[p] - max) / sum * values[(slots[offsets[s] + p] * kvHeads + kvh) * headDim + i];
                    Assert.True(Math.Abs(expected - output[(s * heads + h) * headDim + i]) < 1e-5,
                        $"seq {s} head {h} dim {i}: {expected} vs {output[(s * heads + h) * headDim + i]}");
                }
            }
    }

    private static float[] RandomArray(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
}

public sealed class VectorExpTests
{
    [Fact]
    public void Vectorised_exp_is_accurate_over_the_softmax_range()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) return;
        double worst = 0;
        for (int i = 0; i <= 80_000; i += 8)
        {
            var x = System.Runtime.Intrinsics.Vector256.Create(Enumerable.Range(0, 8).Select(j => -(i + j) / 1000f).ToArray());
            var e = PagedAttention.Exp(x);
            for (int j = 0; j < 8; j++)
            {
                double expected = Math.Exp(x[j]);
                worst = Math.Max(worst, Math.Abs(e[j] - expected) / expected);
            }
        }
        Assert.True(worst < 1e-6, $"worst relative error {worst:E2}");
    }
}
