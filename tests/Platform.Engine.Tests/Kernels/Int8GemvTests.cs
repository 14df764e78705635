// The int8 kernels on every path this CPU supports (Vector512, Vector256 forced with
// Gemv.ForceVector256, portable); paths the CPU lacks are named as skipped.
// The GEMV (Gemv.MatVecQ8, batch 1..16) quantizes its inputs per 32-block and takes integer dots, so
// it is checked against a naive float64 reference of that same math: the inputs quantized here in
// plain scalar code (which must give the kernel's int8 values and scales exactly), exact integer block
// dots, then sum S * dx * dw; only the fp32 scaling and summation separate the two (1e-5 of
// |bias| + sum |q_w * q_x| * dx * dw: the kernels sum a block's integer lane partials in fp32). A second check bounds it against the unquantized inputs: each input is
// within dx / 2 of q * dx, so |y - y_exact| <= sum |w| dx / 2 (plus the same fp32 slack).
// Shapes are random (inFeatures a multiple of 32, the format's block; odd outFeatures), batch 1..16,
// with and without bias, at the default chunk size and at one small enough that several pool threads
// share a matrix. The GEMM (Gemm.MultiplyQ8, 16+ rows) still widens the weights against fp32 inputs
// and is checked against the dequantized weights. A chunk counter proves a large matrix is split.
using Platform.Engine.Kernels;
using Platform.Engine.Model;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class Int8GemvTests(ITestOutputHelper output)
{
    private List<GemvPath> SupportedPaths() => NarrowGemvTests.SupportedPaths(output);

    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>
        {
            { 1, 32, 1, false },
            { 7, 2048, 1, true },
            { 64, 5632, 8, false },
        };
        var random = new Random(2718);
        for (int batch = 1; batch <= 16; batch++)
            data.Add(random.Next(1, 90), 32 * random.Next(1, 40), batch, batch % 3 == 0);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Int8_matches_double_reference_of_the_same_quantized_math_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var (packed, input, bias) = RandomCase(outFeatures, inFeatures, batch, withBias);
        foreach (var path in SupportedPaths())
            foreach (int chunkBytes in new[] { 256 * 1024, 512 })
                NarrowGemvTests.OnPath(path, chunkBytes, () =>
                    AssertNearQuantizedReference(Run(packed, outFeatures, inFeatures, input, batch, bias), packed, outFeatures, inFeatures, input, batch, bias, path));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Int8_is_within_the_activation_rounding_bound_of_the_unquantized_inputs(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var (packed, input, bias) = RandomCase(outFeatures, inFeatures, batch, withBias);
        float[] dequantized = Dequantize(packed, outFeatures, inFeatures);
        foreach (var path in SupportedPaths())
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                float[] actual = Run(packed, outFeatures, inFeatures, input, batch, bias);
                for (int b = 0; b < batch; b++)
                {
                    var (_, dx) = QuantizeInputRow(input, b * inFeatures, inFeatures);
                    for (int n = 0; n < outFeatures; n++)
                    {
                        double exact = bias?[n] ?? 0, magnitude = Math.Abs(exact), rounding = 0;
                        for (int k = 0; k < inFeatures; k++)
                        {
                            double w = dequantized[(long)n * inFeatures + k], x = input[(long)b * inFeatures + k];
                            exact += w * x;
                            magnitude += Math.Abs(w * x);
                            rounding += Math.Abs(w) * dx[k / 32] / 2;
                        }
                        double got = actual[(long)b * outFeatures + n];
                        Assert.True(Math.Abs(got - exact) <= rounding * (1 + 1e-4) + 1e-5 * magnitude + 1e-37,
                            $"{path} [{outFeatures}x{inFeatures}] batch {batch}: out[{b},{n}] = {got:R}, unquantized {exact:R}, rounding bound {rounding:G3}");
                    }
                }
            });
    }

    [Fact]
    public void A_large_int8_matrix_is_split_into_many_chunks()
    {
        // The int8 GEMV once sized its chunks as if rows were 1 byte each, so every matrix ran as one chunk on one thread.
        const int outFeatures = 4096, inFeatures = 2048; // 8.5 MB of int8 rows: ~34 chunks of 256 KB
        byte[] packed = Quantize(NarrowGemvTests.RandomFloats(new Random(5), outFeatures * inFeatures), outFeatures, inFeatures);
        float[] input = NarrowGemvTests.RandomFloats(new Random(6), inFeatures);
        int savedThreads = KernelThreads.Count;
        try
        {
            KernelThreads.Count = 2;
            foreach (var path in SupportedPaths())
                NarrowGemvTests.OnPath(path, 256 * 1024, () =>
                {
                    long before = Gemv.Q8DotChunksRun;
                    Run(packed, outFeatures, inFeatures, input, 1, null);
                    long chunks = Gemv.Q8DotChunksRun - before;
                    output.WriteLine($"{path}: {chunks} chunks");
                    Assert.True(chunks >= 8, $"{path}: an 8.5 MB int8 matrix ran as {chunks} chunk(s); expected >= 4 per thread");
                });
        }
        finally
        {
            KernelThreads.Count = savedThreads;
        }
    }

    [Fact]
    public void A_non_finite_input_block_makes_its_batch_row_nan_and_leaves_the_others()
    {
        const int outFeatures = 5, inFeatures = 64;
        byte[] packed = Quantize(NarrowGemvTests.RandomFloats(new Random(8), outFeatures * inFeatures), outFeatures, inFeatures);
        float[] input = NarrowGemvTests.RandomFloats(new Random(9), 2 * inFeatures);
        input[inFeatures + 40] = float.NaN;
        foreach (var path in SupportedPaths())
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                float[] result = Run(packed, outFeatures, inFeatures, input, 2, null);
                for (int n = 0; n < outFeatures; n++)
                {
                    Assert.True(float.IsFinite(result[n]), $"{path}: row 0 output {n} is {result[n]}");
                    Assert.True(float.IsNaN(result[outFeatures + n]), $"{path}: row 1 output {n} is {result[outFeatures + n]}, not NaN");
                }
            });
    }

    [Theory]
    [InlineData(37, 64, 16, false)]
    [InlineData(70, 2048, 33, true)]
    [InlineData(129, 352, 64, false)]
    public void The_gemm_runs_int8_rows_for_large_batches_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        // Gemm.MultiplyQ8: the same QuantizationQ8 rows through the GEMM's packed tiles (one kernel family), above its crossover.
        var random = new Random(outFeatures + inFeatures + batch);
        float[] wide = NarrowGemvTests.RandomFloats(random, outFeatures * inFeatures);
        byte[] packed = Quantize(wide, outFeatures, inFeatures);
        double[] dequantized = Dequantize(packed, outFeatures, inFeatures).Select(v => (double)v).ToArray();
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        float[]? bias = withBias ? NarrowGemvTests.RandomFloats(random, outFeatures) : null;
        foreach (var path in SupportedPaths())
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                var result = new float[batch * outFeatures];
                fixed (byte* w = packed) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
                    Gemm.MultiplyQ8(w, outFeatures, inFeatures, x, batch, y, b);
                AssertNearReference(result, dequantized, outFeatures, inFeatures, input, batch, bias, path);
            });
    }

    [Fact]
    public void Zero_equal_and_extreme_blocks_match_the_reference()
    {
        // One row of all-zero blocks, one of all-equal blocks, one of extreme-but-representable weights.
        const int inFeatures = 96;
        float[] wide = new float[3 * inFeatures];
        for (int k = 0; k < inFeatures; k++)
        {
            wide[inFeatures + k] = 0.25f;
            wide[2 * inFeatures + k] = k % 2 == 0 ? 60000f : -1e-20f;
        }
        byte[] packed = Quantize(wide, 3, inFeatures);
        float[] input = Enumerable.Range(0, inFeatures).Select(k => (k % 2 == 0 ? 1f : -1f) / (k + 1)).ToArray();
        foreach (var path in SupportedPaths())
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                float[] result = Run(packed, 3, inFeatures, input, 1, null);
                Assert.Equal(0f, result[0]);
                AssertNearQuantizedReference(result, packed, 3, inFeatures, input, 1, null, path);
            });
    }

    [Fact]
    public void Rows_not_a_multiple_of_32_are_refused()
    {
        var weight = new byte[64];
        var input = new float[33];
        var result = new float[1];
        var error = Assert.Throws<ArgumentException>(() =>
        {
            fixed (byte* w = weight) fixed (float* x = input) fixed (float* y = result)
                Gemv.MatVecQ8(w, 1, 33, x, 1, y);
        });
        Assert.Contains("multiple of 32", error.Message, StringComparison.Ordinal);
    }

    internal static byte[] Quantize(float[] wide, int outFeatures, int inFeatures)
    {
        long rowBytes = QuantizationQ8.RowBytes(inFeatures);
        var packed = new byte[outFeatures * rowBytes];
        fixed (float* w = wide) fixed (byte* p = packed)
            for (int n = 0; n < outFeatures; n++)
                QuantizationQ8.QuantizeRow(w + (long)n * inFeatures, inFeatures, p + n * rowBytes);
        return packed;
    }

    internal static float[] Dequantize(byte[] packed, int outFeatures, int inFeatures)
    {
        var wide = new float[outFeatures * inFeatures];
        fixed (byte* p = packed) fixed (float* w = wide)
            QuantizationQ8.DequantizeRows(p, inFeatures, 0, outFeatures, w);
        return wide;
    }

    private static float[] Run(byte[] packed, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (byte* w = packed) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemv.MatVecQ8(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }

    private static (byte[] Packed, float[] Input, float[]? Bias) RandomCase(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var random = new Random(outFeatures * 7919 + inFeatures * 31 + batch);
        // Row magnitudes spread over 4 decades so blocks get very different scales; inputs likewise per batch row.
        float[] wide = new float[outFeatures * inFeatures];
        for (int n = 0; n < outFeatures; n++)
        {
            float magnitude = MathF.Pow(10, -3 + 4 * (float)random.NextDouble());
            for (int k = 0; k < inFeatures; k++)
                wide[n * inFeatures + k] = magnitude * (float)(random.NextDouble() * 2 - 1);
        }
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        for (int b = 0; b < batch; b++)
        {
            float magnitude = MathF.Pow(10, -2 + 3 * (float)random.NextDouble());
            for (int k = 0; k < inFeatures; k++)
                input[b * inFeatures + k] *= magnitude;
        }
        float[]? bias = withBias ? NarrowGemvTests.RandomFloats(random, outFeatures) : null;
        return (Quantize(wide, outFeatures, inFeatures), input, bias);
    }

    /// <summary>One input row quantized as the kernel must: per 32-block dx = max|x| / 127, q = round-half-even(x * (127 / max|x|)).</summary>
    private static (sbyte[] Values, float[] Scales) QuantizeInputRow(float[] input, int offset, int inFeatures)
    {
        var values = new sbyte[inFeatures];
        var scales = new float[inFeatures / 32];
        for (int j = 0; j < scales.Length; j++)
        {
            float maxAbs = 0;
            for (int i = 0; i < 32; i++)
                maxAbs = Math.Max(maxAbs, Math.Abs(input[offset + j * 32 + i]));
            scales[j] = maxAbs / 127f;
            float inverse = maxAbs > 0 ? 127f / maxAbs : 0;
            for (int i = 0; i < 32; i++)
                values[j * 32 + i] = (sbyte)MathF.Round(input[offset + j * 32 + i] * inverse, MidpointRounding.ToEven);
        }
        return (values, scales);
    }

    private static void AssertNearQuantizedReference(float[] actual, byte[] packed, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias, GemvPath path)
    {
        long rowBytes = QuantizationQ8.RowBytes(inFeatures);
        for (int b = 0; b < batch; b++)
        {
            var (xq, dx) = QuantizeInputRow(input, b * inFeatures, inFeatures);
            for (int n = 0; n < outFeatures; n++)
            {
                double sum = bias?[n] ?? 0, scale = Math.Abs(bias?[n] ?? 0);
                for (int j = 0; j < inFeatures / 32; j++)
                {
                    long block = n * rowBytes + j * QuantizationQ8.BlockBytes;
                    double dw = (double)BitConverter.ToHalf(packed, (int)block);
                    long dot = 0, magnitude = 0;
                    for (int i = 0; i < 32; i++)
                    {
                        int product = (sbyte)packed[block + 2 + i] * xq[j * 32 + i];
                        dot += product;
                        magnitude += Math.Abs(product);
                    }
                    sum += dot * dw * dx[j];
                    // The kernels keep 8 or 16 exact integer partials per block and sum those in fp32, so the slack
                    // scales with the products' magnitudes, not with the block's (possibly cancelled) total.
                    scale += magnitude * dw * dx[j];
                }
                double got = actual[(long)b * outFeatures + n];
                Assert.True(Math.Abs(got - sum) <= 1e-5 * scale + 1e-37,
                    $"{path} [{outFeatures}x{inFeatures}] batch {batch}: out[{b},{n}] = {got:R}, float64 reference of the quantized math {sum:R} (scale {scale:G3})");
            }
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
}
