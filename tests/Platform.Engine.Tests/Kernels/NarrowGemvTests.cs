// The narrow-weight GEMV (bf16 and fp16 weights widened in registers, fp32 sums) against a naive
// float64 reference over the same narrow values, on every kernel path this CPU supports: Vector512
// (AVX-512F), Vector256 (AVX2+FMA, forced with Gemv.ForceVector256) and portable. Paths the CPU
// lacks are named in the test output as skipped. Shapes are random with odd sizes and unaligned
// tails (inFeatures not a multiple of 8 or 16), batch 1..64, and a chunk size small enough that
// several pool threads share one matrix. The tolerance is 1e-5 of |bias| + sum_k |w*x|: the
// reference uses the very values the kernel reads, so only fp32 summation order separates them.
// bf16 is also held bit-for-bit to the fp32 kernel on the same bf16-rounded weights (same path,
// same tiling, exact widening, both starting on a cache line), and every width to the reference with
// its rows starting anywhere in a cache line (as weights mapped from a safetensors file do).
using System.Runtime.InteropServices;
using Platform.Engine.Kernels;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class NarrowGemvTests(ITestOutputHelper output)
{
    private List<GemvPath> SupportedPaths() => SupportedPaths(output);

    /// <summary>The paths this CPU can run, after telling the test output which are skipped (every kernel test's list).</summary>
    internal static List<GemvPath> SupportedPaths(ITestOutputHelper output)
    {
        var paths = new List<GemvPath> { GemvPath.Portable };
        if (Gemv.IsAccelerated) paths.Add(GemvPath.Vector256);
        else output.WriteLine("skipped: Vector256 (this CPU has no AVX2+FMA)");
        if (Gemv.Vector512Supported) paths.Add(GemvPath.Vector512);
        else output.WriteLine("skipped: Vector512 (this CPU has no AVX-512F)");
        output.WriteLine("ran: " + string.Join(", ", paths));
        return paths;
    }

    internal static void OnPath(GemvPath path, int chunkBytes, Action action)
    {
        bool savedPortable = Gemv.ForcePortable, saved256 = Gemv.ForceVector256, saved512 = Gemv.ForceVector512;
        int savedChunk = Gemv.ChunkBytes, savedThreshold = Gemv.ParallelThresholdBytes;
        try
        {
            Gemv.ForcePortable = path == GemvPath.Portable;
            Gemv.ForceVector256 = path == GemvPath.Vector256;
            // Pinned: where Gemv.PreferVector256 holds (Zen 4) the float GEMVs would otherwise take AVX2 and leave
            // their AVX-512 kernels untested.
            Gemv.ForceVector512 = path == GemvPath.Vector512;
            Gemv.ChunkBytes = chunkBytes;
            Gemv.ParallelThresholdBytes = Math.Min(savedThreshold, chunkBytes);
            Assert.Equal(path, Gemv.ActivePath);
            Assert.Equal(path, Gemv.FloatPath);
            action();
        }
        finally
        {
            Gemv.ForcePortable = savedPortable;
            Gemv.ForceVector256 = saved256;
            Gemv.ForceVector512 = saved512;
            Gemv.ChunkBytes = savedChunk;
            Gemv.ParallelThresholdBytes = savedThreshold;
        }
    }

    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        var random = new Random(4321);
        (int Out, int In, int Batch)[] fixedShapes =
        [
            (1, 1, 1), (1, 15, 3), (2, 16, 64), (3, 17, 9), (5, 31, 2), (7, 63, 4), (9, 65, 8), (33, 1031, 5),
            (1, 20_001, 1), (130, 2048, 16), (257, 515, 33), (64, 2049, 64),
        ];
        foreach ((int o, int i, int b) in fixedShapes)
            data.Add(o, i, b, random.Next(2) == 0);
        for (int batch = 1; batch <= 64; batch++)
            data.Add(random.Next(1, 200), random.Next(1, 600), batch, random.Next(2) == 0);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void BF16_matches_double_reference_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var random = new Random(outFeatures * 7919 + inFeatures * 31 + batch);
        ushort[] weight = RandomBFloat16(random, outFeatures * inFeatures);
        float[] input = RandomFloats(random, batch * inFeatures);
        float[]? bias = withBias ? RandomFloats(random, outFeatures) : null;
        double[] widened = weight.Select(w => (double)Gemv.WidenBFloat16(w)).ToArray();
        foreach (var path in SupportedPaths())
            foreach (int chunkBytes in new[] { 256 * 1024, 512 })
                OnPath(path, chunkBytes, () =>
                    AssertNearReference(RunBF16(weight, outFeatures, inFeatures, input, batch, bias), widened, outFeatures, inFeatures, input, batch, bias, path));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void F16_matches_double_reference_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var random = new Random(outFeatures * 104729 + inFeatures * 17 + batch);
        Half[] weight = RandomFloats(random, outFeatures * inFeatures).Select(v => (Half)v).ToArray();
        float[] input = RandomFloats(random, batch * inFeatures);
        float[]? bias = withBias ? RandomFloats(random, outFeatures) : null;
        double[] widened = weight.Select(w => (double)w).ToArray();
        foreach (var path in SupportedPaths())
            foreach (int chunkBytes in new[] { 256 * 1024, 512 })
                OnPath(path, chunkBytes, () =>
                    AssertNearReference(RunF16(weight, outFeatures, inFeatures, input, batch, bias), widened, outFeatures, inFeatures, input, batch, bias, path));
    }

    [Theory]
    [InlineData(1, 2048, 1)]
    [InlineData(37, 515, 3)]
    [InlineData(64, 1000, 8)]
    [InlineData(19, 77, 13)]
    [InlineData(130, 2049, 16)]
    [InlineData(11, 333, 64)]
    public void BF16_equals_fp32_compute_on_the_same_rounded_weights(int outFeatures, int inFeatures, int batch)
    {
        var random = new Random(outFeatures + inFeatures + batch);
        ushort[] weight = RandomBFloat16(random, outFeatures * inFeatures);
        float[] asFloat = weight.Select(Gemv.WidenBFloat16).ToArray();
        float[] input = RandomFloats(random, batch * inFeatures);
        float[] bias = RandomFloats(random, outFeatures);
        // Both on a cache-line boundary: a row that starts mid-line has its head before the boundary summed apart
        // (Gemv.AlignedHead), and the head's length depends on the element width.
        foreach (var path in SupportedPaths())
            OnPath(path, 256 * 1024, () =>
            {
                float[] narrow = RunAt(weight, 0, outFeatures, inFeatures, input, batch, bias);
                float[] wide = RunAt(asFloat, 0, outFeatures, inFeatures, input, batch, bias);
                for (int i = 0; i < narrow.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(narrow[i]) == BitConverter.SingleToInt32Bits(wide[i]),
                        $"{path}: output {i}: bf16 kernel {narrow[i]:R} vs fp32 kernel on the widened weights {wide[i]:R}");
            });
    }

    [Fact]
    public void BF16_widening_is_exact_for_every_bit_pattern()
    {
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            float expected = BitConverter.UInt32BitsToSingle((uint)bits << 16);
            float widened = Gemv.WidenBFloat16((ushort)bits);
            Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(widened));
        }
    }

    [Fact]
    public void BF16_handles_subnormal_extreme_and_signed_zero_weights()
    {
        // Smallest subnormals, largest finite (±3.39e38), -0, 1.5, one 10^-3-ish value; times modest inputs.
        ushort[] specials = [0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x8000, 0x3FC0, 0x3A83];
        int inFeatures = 19, outFeatures = specials.Length;
        var weight = new ushort[outFeatures * inFeatures];
        for (int n = 0; n < outFeatures; n++)
            for (int k = 0; k < inFeatures; k++)
                weight[n * inFeatures + k] = k % 5 == 0 ? specials[n] : (ushort)0;
        var input = Enumerable.Range(0, inFeatures).Select(k => (k % 2 == 0 ? 1 : -1) * (k + 1) / 64f).ToArray();
        double[] widened = weight.Select(w => (double)Gemv.WidenBFloat16(w)).ToArray();
        foreach (var path in SupportedPaths())
            OnPath(path, 256 * 1024, () =>
                AssertNearReference(RunBF16(weight, outFeatures, inFeatures, input, 1, null), widened, outFeatures, inFeatures, input, 1, null, path));
    }

    private static readonly int[] TileBatches = [1, 2, 3, 4, 5, 8]; // every GEMV tile width, and batch 3 (a duplicated row)

    [Theory]
    [InlineData(9, 2048)]
    [InlineData(5, 96)]
    [InlineData(6, 1000)]
    public void Rows_starting_anywhere_in_a_cache_line_match_the_float64_reference(int outFeatures, int inFeatures)
    {
        // Safetensors places tensors 8-byte aligned, so mapped weights start anywhere in a line; the kernels sum
        // the part before the first 64-byte boundary apart (when every row shares that boundary) and stream the
        // rest from it. Every start offset, every batch tiling, each weight width.
        var random = new Random(outFeatures * inFeatures);
        float[] f32 = RandomFloats(random, outFeatures * inFeatures);
        ushort[] bf16 = RandomBFloat16(random, outFeatures * inFeatures);
        Half[] f16 = RandomFloats(random, outFeatures * inFeatures).Select(v => (Half)v).ToArray();
        double[] f32Exact = f32.Select(v => (double)v).ToArray();
        double[] bf16Exact = bf16.Select(v => (double)Gemv.WidenBFloat16(v)).ToArray();
        double[] f16Exact = f16.Select(v => (double)v).ToArray();
        foreach (var path in SupportedPaths())
            OnPath(path, 256 * 1024, () =>
            {
                foreach (int batch in TileBatches)
                {
                    float[] input = RandomFloats(random, batch * inFeatures);
                    float[] bias = RandomFloats(random, outFeatures);
                    for (int offset = 0; offset < 64; offset += 2)
                    {
                        if (offset % 4 == 0)
                            AssertNearReference(RunAt(f32, offset, outFeatures, inFeatures, input, batch, bias), f32Exact, outFeatures, inFeatures, input, batch, bias, path);
                        AssertNearReference(RunAt(bf16, offset, outFeatures, inFeatures, input, batch, bias), bf16Exact, outFeatures, inFeatures, input, batch, bias, path);
                        AssertNearReference(RunAt(f16, offset, outFeatures, inFeatures, input, batch, bias), f16Exact, outFeatures, inFeatures, input, batch, bias, path);
                    }
                }
            });
    }

    /// <summary>The GEMV of float, bf16 (ushort) or f16 weights copied to <paramref name="offset"/> bytes past a 64-byte boundary.</summary>
    internal static float[] RunAt<T>(T[] weight, int offset, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias) where T : unmanaged
    {
        nuint bytes = (nuint)(weight.Length * sizeof(T));
        byte* block = (byte*)NativeMemory.AlignedAlloc(bytes + 64, 64);
        try
        {
            T* w = (T*)(block + offset);
            weight.AsSpan().CopyTo(new Span<T>(w, weight.Length));
            var result = new float[batch * outFeatures];
            fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            {
                if (typeof(T) == typeof(float)) Gemv.MatVecF32((float*)w, outFeatures, inFeatures, x, batch, y, b);
                else if (typeof(T) == typeof(ushort)) Gemv.MatVecBF16((ushort*)w, outFeatures, inFeatures, x, batch, y, b);
                else if (typeof(T) == typeof(Half)) Gemv.MatVecF16((Half*)w, outFeatures, inFeatures, x, batch, y, b);
                else throw new ArgumentException($"no GEMV for {typeof(T)}");
            }
            return result;
        }
        finally
        {
            NativeMemory.AlignedFree(block);
        }
    }

    private static void AssertNearReference(float[] actual, double[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias, GemvPath path)
    {
        for (int b = 0; b < batch; b++)
            for (int n = 0; n < outFeatures; n++)
            {
                double sum = bias?[n] ?? 0, scale = Math.Abs(bias?[n] ?? 0);
                for (int k = 0; k < inFeatures; k++)
                {
                    double product = weight[(long)n * inFeatures + k] * input[(long)b * inFeatures + k];
                    sum += product;
                    scale += Math.Abs(product);
                }
                double got = actual[(long)b * outFeatures + n];
                Assert.True(Math.Abs(got - sum) <= 1e-5 * scale + 1e-37,
                    $"{path} [{outFeatures}x{inFeatures}] batch {batch}: out[{b},{n}] = {got:R}, float64 reference {sum:R} (scale {scale:G3})");
            }
    }

    internal static ushort[] RandomBFloat16(Random random, int count) => RandomFloats(random, count).Select(RoundToBFloat16).ToArray();

    /// <summary>fp32 to bf16 bits, round to nearest even (finite inputs).</summary>
    internal static ushort RoundToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    internal static float[] RandomFloats(Random random, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    internal static float[] RunBF16(ushort[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (ushort* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemv.MatVecBF16(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }

    private static float[] RunF16(Half[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (Half* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemv.MatVecF16(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }

    private static float[] RunF32(float[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (float* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemv.MatVecF32(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }
}
