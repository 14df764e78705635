// The int8 GEMV (QuantizationQ8 rows widened in registers, fp32 sums) against a naive float64
// reference over the dequantized weights q * d, on every kernel path this CPU supports (Vector512,
// Vector256 forced with Gemv.ForceVector256, portable); paths the CPU lacks are named as skipped.
// Shapes are random (inFeatures a multiple of 32, the format's block; odd outFeatures), batch 1..16,
// with and without bias, at the default chunk size and at one small enough that several pool threads
// share a matrix. The kernel reads exactly q * d (the products are exact in fp32), so only fp32
// summation order separates it from the reference: 1e-5 of |bias| + sum |w*x|, as for bf16/fp16.
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
    public void Int8_matches_double_reference_on_the_dequantized_weights_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var random = new Random(outFeatures * 7919 + inFeatures * 31 + batch);
        // Row magnitudes spread over 4 decades so blocks get very different scales.
        float[] wide = new float[outFeatures * inFeatures];
        for (int n = 0; n < outFeatures; n++)
        {
            float magnitude = MathF.Pow(10, -3 + 4 * (float)random.NextDouble());
            for (int k = 0; k < inFeatures; k++)
                wide[n * inFeatures + k] = magnitude * (float)(random.NextDouble() * 2 - 1);
        }
        byte[] packed = Quantize(wide, outFeatures, inFeatures);
        double[] dequantized = Dequantize(packed, outFeatures, inFeatures).Select(v => (double)v).ToArray();
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        float[]? bias = withBias ? NarrowGemvTests.RandomFloats(random, outFeatures) : null;
        foreach (var path in SupportedPaths())
            foreach (int chunkBytes in new[] { 256 * 1024, 512 })
                NarrowGemvTests.OnPath(path, chunkBytes, () =>
                    AssertNearReference(Run(packed, outFeatures, inFeatures, input, batch, bias), dequantized, outFeatures, inFeatures, input, batch, bias, path));
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
        double[] dequantized = Dequantize(packed, 3, inFeatures).Select(v => (double)v).ToArray();
        foreach (var path in SupportedPaths())
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                float[] result = Run(packed, 3, inFeatures, input, 1, null);
                Assert.Equal(0f, result[0]);
                AssertNearReference(result, dequantized, 3, inFeatures, input, 1, null, path);
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
