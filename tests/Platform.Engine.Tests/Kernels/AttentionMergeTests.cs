// DistAttention's math: attention over KV split into groups (as if on several
// workers), computed per group with its log-sum-exp and merged, equals
// attention over the whole context — for GQA, empty groups and one-token groups.
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

public sealed unsafe class AttentionMergeTests
{
    [Theory]
    [InlineData(8, 2, 64, 100, new[] { 30, 0, 1, 69 })]
    [InlineData(4, 4, 16, 5, new[] { 1, 1, 1, 1, 1 })]
    [InlineData(32, 4, 64, 700, new[] { 256, 256, 188 })]
    [InlineData(6, 3, 12, 9, new[] { 0, 9, 0 })]
    public void Merged_partials_equal_full_attention(int heads, int kvHeads, int headDim, int context, int[] groupSizes)
    {
        Assert.Equal(context, groupSizes.Sum());
        var rng = new Random(heads * 7 + context);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var keys = R(context * kvHeads * headDim);
        var values = R(context * kvHeads * headDim);
        var query = R(heads * headDim);
        var slots = Enumerable.Range(0, context).Select(i => (long)i).OrderBy(_ => rng.Next()).ToArray();
        float scale = 1f / MathF.Sqrt(headDim);

        var full = new float[heads * headDim];
        Run(slots, full, null);

        var outputs = new List<float[]>();
        var lses = new List<float[]>();
        int start = 0;
        foreach (int size in groupSizes)
        {
            var o = new float[heads * headDim];
            var l = new float[heads];
            Run(slots[start..(start + size)], o, l);
            outputs.Add(o);
            lses.Add(l);
            start += size;
        }
        var merged = new float[heads * headDim];
        var mergedLse = new float[heads];
        AttentionMerge.Merge(outputs, lses, heads, headDim, merged, mergedLse);
        for (int i = 0; i < full.Length; i++)
            Assert.True(Math.Abs(full[i] - merged[i]) <= 1e-5 * Math.Max(1, Math.Abs(full[i])), $"value {i}: {full[i]} vs {merged[i]}");

        // The merged log-sum-exp equals the one over the whole context, so merges can nest.
        var wholeLse = new float[heads];
        Run(slots, new float[heads * headDim], wholeLse);
        for (int h = 0; h < heads; h++) Assert.Equal(wholeLse[h], mergedLse[h], 4);

        void Run(long[] s, float[] output, float[]? lse)
        {
            int length = s.Length;
            int offset = 0;
            fixed (float* q = query) fixed (float* k = keys) fixed (float* v = values) fixed (float* o = output) fixed (float* l = lse)
            fixed (long* ps = s.Length == 0 ? new long[1] : s)
            {
                PagedAttention.DecodePartial(q, k, v, ps, &offset, &length, 1, heads, kvHeads, headDim, scale, o, lse is null ? null : l);
            }
        }
    }

    [Fact]
    public void A_head_with_no_keys_anywhere_merges_to_zero()
    {
        var merged = new float[4];
        var lse = new float[2];
        AttentionMerge.Merge([new float[4], new float[4]], [[float.NegativeInfinity, 0f], [float.NegativeInfinity, float.NegativeInfinity]], 2, 2, merged, lse);
        Assert.Equal(float.NegativeInfinity, lse[0]);
        Assert.Equal(0f, lse[1]);
        Assert.All(merged, x => Assert.Equal(0f, x));
    }
}
