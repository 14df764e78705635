// The KV pools' libtorch path (PagedKvStore.ForceTensorPath), which runs wherever the pools are not on
// the CPU: DistAttention's lent-KV writes and partial attention through tensor ops on the device
// instead of host pointers. Held here, on CPU pools, to the pointer path it replaces: the same bytes
// written, and the same partial outputs and log-sum-exps (the exact-merge contract, −∞ and 0 for an
// empty range), in float32 and in bfloat16/float16 pools, with GQA and ragged per-query ranges.
using Platform.Engine.KvCache;
using Platform.Engine.Tests.Kernels;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

[Collection(KernelCollection.Name)]
public sealed unsafe class KvStoreTensorPathTests
{
    private const int Layers = 2, Blocks = 6, BlockSize = 4, KvHeads = 2, Heads = 8, HeadDim = 16;

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void Lent_kv_writes_and_partial_attention_match_the_pointer_path(ScalarType dtype)
    {
        var random = new Random(3);
        int row = KvHeads * HeadDim;
        long[] slots = [1, 2, 5, 9, 10, 11, 17, 23, 20];
        float[] keys = [.. Enumerable.Range(0, slots.Length * row).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] values = [.. Enumerable.Range(0, slots.Length * row).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        using var pointers = new PagedKvStore(Layers, Blocks, BlockSize, KvHeads, HeadDim, dtype);
        using var tensors = new PagedKvStore(Layers, Blocks, BlockSize, KvHeads, HeadDim, dtype);
        pointers.WriteRows(1, slots, keys, values);
        try
        {
            PagedKvStore.ForceTensorPath = true;
            tensors.WriteRows(1, slots, keys, values);
        }
        finally
        {
            PagedKvStore.ForceTensorPath = false;
        }
        long poolBytes = (long)Blocks * BlockSize * row * pointers.ElementSize;
        for (int l = 0; l < Layers; l++)
        {
            var (pk, pv) = pointers.Pointers(l);
            var (tk, tv) = tensors.Pointers(l);
            Assert.True(new ReadOnlySpan<byte>((void*)pk, (int)poolBytes).SequenceEqual(new ReadOnlySpan<byte>((void*)tk, (int)poolBytes)), $"layer {l} keys differ");
            Assert.True(new ReadOnlySpan<byte>((void*)pv, (int)poolBytes).SequenceEqual(new ReadOnlySpan<byte>((void*)tv, (int)poolBytes)), $"layer {l} values differ");
        }

        // Four queries over ragged ranges of the nine slots, one of them empty.
        int count = 4;
        int[] offsets = [0, 2, 5, 3];
        int[] lengths = [9, 4, 4, 0];
        float[] queries = [.. Enumerable.Range(0, count * Heads * HeadDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var (kernelOut, kernelLse) = Partial(pointers, queries, slots, offsets, lengths, count, tensorPath: false);
        var (tensorOut, tensorLse) = Partial(pointers, queries, slots, offsets, lengths, count, tensorPath: true);
        for (int i = 0; i < kernelOut.Length; i++)
            Assert.True(Math.Abs(kernelOut[i] - tensorOut[i]) <= 1e-5, $"output {i}: kernel {kernelOut[i]} vs tensor path {tensorOut[i]}");
        for (int i = 0; i < kernelLse.Length; i++)
        {
            if (float.IsNegativeInfinity(kernelLse[i])) Assert.True(float.IsNegativeInfinity(tensorLse[i]), $"lse {i} should be -inf for the empty range");
            else Assert.True(Math.Abs(kernelLse[i] - tensorLse[i]) <= 1e-5, $"lse {i}: kernel {kernelLse[i]} vs tensor path {tensorLse[i]}");
        }
        Assert.All(tensorOut.AsSpan(3 * Heads * HeadDim).ToArray(), o => Assert.Equal(0f, o));
    }

    private static (float[] Output, float[] LogSumExp) Partial(PagedKvStore store, float[] queries, long[] slots, int[] offsets, int[] lengths, int count, bool tensorPath)
    {
        var output = new float[count * Heads * HeadDim];
        var lse = new float[count * Heads];
        try
        {
            PagedKvStore.ForceTensorPath = tensorPath;
            fixed (float* q = queries) fixed (long* s = slots) fixed (int* off = offsets) fixed (int* len = lengths)
            fixed (float* o = output) fixed (float* l = lse)
                store.PartialAttention(1, q, s, slots.Length, off, len, count, Heads, KvHeads, HeadDim, 1f / MathF.Sqrt(HeadDim), o, l);
        }
        finally
        {
            PagedKvStore.ForceTensorPath = false;
        }
        return (output, lse);
    }
}
