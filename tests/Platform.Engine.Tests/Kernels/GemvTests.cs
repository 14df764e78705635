// Correctness of the decode GEMV kernels against a naive double-precision reference, on both
// the AVX2 path and the portable fallback, over random shapes: inFeatures not a multiple of 8,
// outFeatures below the thread count, every batch size 1..16, with and without bias, and chunk
// sizes small enough that several pool threads share a matrix. Tolerances are relative to
// |bias| + sum_k |w*x| (the natural scale of a dot product's rounding error): 1e-4 for fp32,
// 2e-3 for fp16 against the reference computed from the same fp16 weights upcast. No timing.
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class GemvTests
{
    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        var random = new Random(1234);
        (int Out, int In)[] fixedShapes =
        [
            (1, 1), (1, 7), (2, 8), (3, 9), (5, 17), (7, 63), (8, 64), (13, 100),
            (1, 20_000), (3, 20_001), (33, 1031), (130, 2048), (257, 515), (600, 333),
        ];
        foreach ((int o, int i) in fixedShapes)
        {
            int batch = random.Next(1, 17);
            data.Add(o, i, batch, random.Next(2) == 0);
        }
        for (int batch = 1; batch <= 16; batch++)
        {
            data.Add(random.Next(1, 300), random.Next(1, 700), batch, false);
            data.Add(random.Next(1, 300), random.Next(1, 700), batch, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void F32_matches_double_reference(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        foreach (bool portable in new[] { false, true })
        foreach (int chunkBytes in new[] { 256 * 1024, 512 })
            RunWithSettings(portable, chunkBytes, () => CheckF32(outFeatures, inFeatures, batch, withBias, seed: outFeatures * 31 + inFeatures));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void F16_matches_reference_from_upcast_weights(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        foreach (bool portable in new[] { false, true })
        foreach (int chunkBytes in new[] { 256 * 1024, 512 })
            RunWithSettings(portable, chunkBytes, () => CheckF16(outFeatures, inFeatures, batch, withBias, seed: outFeatures * 17 + inFeatures));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Thread_count_does_not_change_results(int threads)
    {
        int saved = KernelThreads.Count;
        try
        {
            KernelThreads.Count = threads;
            RunWithSettings(false, 1024, () => CheckF32(301, 130, 5, true, seed: 7));
            RunWithSettings(false, 1024, () => CheckF16(301, 130, 9, false, seed: 8));
        }
        finally
        {
            KernelThreads.Count = saved;
        }
    }

    [Fact]
    public void F16_handles_subnormal_extreme_and_special_weights()
    {
        Half[] specials =
        [
            BitConverter.UInt16BitsToHalf(0x0001), BitConverter.UInt16BitsToHalf(0x8001), // smallest subnormals
            BitConverter.UInt16BitsToHalf(0x03FF), BitConverter.UInt16BitsToHalf(0x0400), // largest subnormal, smallest normal
            Half.MaxValue, Half.MinValue, Half.NegativeZero, (Half)1.5f, (Half)(-0.333f),
        ];
        // Rows: each special times a large input, plus a plain row; inputs chosen so no product overflows fp32.
        int inFeatures = 11;
        int outFeatures = specials.Length;
        var weight = new Half[outFeatures * inFeatures];
        for (int n = 0; n < outFeatures; n++)
            for (int k = 0; k < inFeatures; k++)
                weight[n * inFeatures + k] = k % 3 == 0 ? specials[n] : (Half)0f;
        var input = new float[inFeatures];
        for (int k = 0; k < inFeatures; k++)
            input[k] = (k + 1) * 1000.5f;
        foreach (bool portable in new[] { false, true })
        {
            RunWithSettings(portable, 256 * 1024, () =>
            {
                float[] output = RunF16(weight, outFeatures, inFeatures, input, 1, null);
                double[] expected = ReferenceF16(weight, outFeatures, inFeatures, input, 1, null);
                for (int n = 0; n < outFeatures; n++)
                    Assert.Equal(expected[n], output[n], Math.Abs(expected[n]) * 1e-6);
            });
        }
    }

    [Fact]
    public void AllFinite_finds_inf_and_nan_anywhere()
    {
        foreach (int count in new[] { 0, 1, 15, 16, 17, 100, 1000 })
        {
            var values = new Half[count];
            for (int i = 0; i < count; i++)
                values[i] = (Half)((i % 7) - 3.25f);
            fixed (Half* p = values)
                Assert.True(Gemv.AllFinite(p, count));
            for (int at = 0; at < count; at += Math.Max(1, count / 5))
            {
                foreach (Half bad in new[] { Half.PositiveInfinity, Half.NegativeInfinity, Half.NaN })
                {
                    Half saved = values[at];
                    values[at] = bad;
                    fixed (Half* p = values)
                        Assert.False(Gemv.AllFinite(p, count), $"{bad} at {at} of {count}");
                    values[at] = saved;
                }
            }
        }
    }

    [Fact]
    public void Scaled_half_decode_is_exact_for_every_finite_bit_pattern()
    {
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            Half h = BitConverter.UInt16BitsToHalf((ushort)bits);
            float decoded = Gemv.DecodeHalfScaled(unchecked((short)bits));
            if (!Half.IsFinite(h))
                continue; // the fast decode assumes finite weights (Gemv.AllFinite guards loaders)
            // decoded is h * 2^-112: exact, so scaling back by 2^112 in double recovers h.
            double back = decoded * Math.Pow(2, 112);
            Assert.Equal((double)(float)h, back);
            if (Half.IsNegative(h))
                Assert.True(float.IsNegative(decoded), $"0x{bits:X4}");
        }
    }

    [Fact]
    public void Repeated_calls_are_stable()
    {
        RunWithSettings(false, 2048, () =>
        {
            var random = new Random(99);
            int outFeatures = 96, inFeatures = 200, batch = 3;
            float[] weight = RandomArray(random, outFeatures * inFeatures);
            float[] input = RandomArray(random, batch * inFeatures);
            float[] first = RunF32(weight, outFeatures, inFeatures, input, batch, null);
            for (int i = 0; i < 3000; i++)
                Assert.Equal(first, RunF32(weight, outFeatures, inFeatures, input, batch, null));
        });
    }

    [Fact]
    public void Concurrent_callers_each_get_correct_results()
    {
        RunWithSettings(false, 2048, () =>
        {
            var tasks = Enumerable.Range(0, 4).Select(t => Task.Run(() =>
            {
                for (int i = 0; i < 50; i++)
                {
                    CheckF32(64 + t, 300 + i, 1 + (i + t) % 16, i % 2 == 0, seed: t * 1000 + i);
                    CheckF16(64 + t, 300 + i, 1 + (i + t) % 16, i % 2 == 1, seed: t * 1000 + i);
                }
            })).ToArray();
            Assert.True(Task.WaitAll(tasks, TimeSpan.FromMinutes(2)), "concurrent GEMV calls did not finish");
        });
    }

    [Fact]
    public void Invalid_arguments_throw()
    {
        float[] buffer = new float[16];
        fixed (float* p = buffer)
        {
            float* ptr = p;
            Assert.Throws<ArgumentNullException>(() => Gemv.MatVecF32(null, 1, 1, ptr, 1, ptr));
            Assert.Throws<ArgumentOutOfRangeException>(() => Gemv.MatVecF32(ptr, 0, 1, ptr, 1, ptr));
            Assert.Throws<ArgumentOutOfRangeException>(() => Gemv.MatVecF32(ptr, 1, 1, ptr, 0, ptr));
            Assert.Throws<ArgumentOutOfRangeException>(() => Gemv.MatVecF16((Half*)ptr, 1, 0, ptr, 1, ptr));
        }
    }

    private static void RunWithSettings(bool portable, int chunkBytes, Action action)
    {
        bool savedPortable = Gemv.ForcePortable;
        int savedChunk = Gemv.ChunkBytes;
        int savedThreshold = Gemv.ParallelThresholdBytes;
        try
        {
            Gemv.ForcePortable = portable;
            Gemv.ChunkBytes = chunkBytes;
            // Small chunk sizes in these tests are there to make several threads share small matrices.
            Gemv.ParallelThresholdBytes = Math.Min(savedThreshold, chunkBytes);
            action();
        }
        finally
        {
            Gemv.ForcePortable = savedPortable;
            Gemv.ChunkBytes = savedChunk;
            Gemv.ParallelThresholdBytes = savedThreshold;
        }
    }

    private static void CheckF32(int outFeatures, int inFeatures, int batch, bool withBias, int seed)
    {
        var random = new Random(seed);
        float[] weight = RandomArray(random, outFeatures * inFeatures);
        float[] input = RandomArray(random, batch * inFeatures);
        float[]? bias = withBias ? RandomArray(random, outFeatures) : null;
        float[] output = RunF32(weight, outFeatures, inFeatures, input, batch, bias);
        var upcast = Array.ConvertAll(weight, w => (double)w);
        AssertClose(upcast, outFeatures, inFeatures, input, batch, bias, output, 1e-4);
    }

    private static void CheckF16(int outFeatures, int inFeatures, int batch, bool withBias, int seed)
    {
        var random = new Random(seed);
        Half[] weight = Array.ConvertAll(RandomArray(random, outFeatures * inFeatures), w => (Half)w);
        float[] input = RandomArray(random, batch * inFeatures);
        float[]? bias = withBias ? RandomArray(random, outFeatures) : null;
        float[] output = RunF16(weight, outFeatures, inFeatures, input, batch, bias);
        var upcast = Array.ConvertAll(weight, w => (double)(float)w);
        AssertClose(upcast, outFeatures, inFeatures, input, batch, bias, output, 2e-3);
    }

    private static void AssertClose(double[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias, float[] output, double tolerance)
    {
        for (int b = 0; b < batch; b++)
        {
            for (int n = 0; n < outFeatures; n++)
            {
                double sum = bias?[n] ?? 0, magnitude = Math.Abs(bias?[n] ?? 0);
                for (int k = 0; k < inFeatures; k++)
                {
                    double product = weight[n * inFeatures + k] * input[b * inFeatures + k];
                    sum += product;
                    magnitude += Math.Abs(product);
                }
                double actual = output[b * outFeatures + n];
                double error = Math.Abs(actual - sum);
                Assert.True(error <= tolerance * magnitude + 1e-30,
                    $"[{b},{n}] of {batch}x{outFeatures}x{inFeatures}: got {actual}, expected {sum} (error {error:E2}, scale {magnitude:E2})");
            }
        }
    }

    private static double[] ReferenceF16(Half[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new double[batch * outFeatures];
        for (int b = 0; b < batch; b++)
            for (int n = 0; n < outFeatures; n++)
            {
                double sum = bias?[n] ?? 0;
                for (int k = 0; k < inFeatures; k++)
                    sum += (double)(float)weight[n * inFeatures + k] * input[b * inFeatures + k];
                result[b * outFeatures + n] = sum;
            }
        return result;
    }

    internal static float[] RandomArray(Random random, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    internal static float[] RunF32(float[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var output = new float[batch * outFeatures];
        fixed (float* w = weight)
        fixed (float* x = input)
        fixed (float* y = output)
        fixed (float* c = bias)
            Gemv.MatVecF32(w, outFeatures, inFeatures, x, batch, y, c);
        return output;
    }

    internal static float[] RunF16(Half[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var output = new float[batch * outFeatures];
        fixed (Half* w = weight)
        fixed (float* x = input)
        fixed (float* y = output)
        fixed (float* c = bias)
            Gemv.MatVecF16(w, outFeatures, inFeatures, x, batch, y, c);
        return output;
    }
}
