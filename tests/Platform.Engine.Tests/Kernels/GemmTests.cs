// The batched-decode GEMM (Gemm.Multiply*: packed weight tiles, register tiles of weight rows x
// token rows) against a naive float64 reference over the very weight values the kernel reads, for
// fp32, bf16 and fp16 weights, on every kernel path this CPU supports: Vector512 (AVX-512F),
// Vector256 (AVX2+FMA, forced with Gemv.ForceVector256) and portable; paths the CPU lacks are named
// in the test output as skipped. The GEMV crossover is switched off (both Gemm.GemvRowsLimit* = 0) so the
// tiles themselves run for batch 1..64; one test checks that the default routing gives the same
// answers. Shapes are random plus fixed edge cases: outFeatures not a multiple of the 6- or 3-row
// weight tile, batches not a multiple of the 4-row token tile, inFeatures not a multiple of 8 or 16
// (the packed scalar tail), inFeatures over several k-blocks (with a small k-block too), and chunks
// small enough that both pool threads share a matrix. Tolerance: 1e-5 of |bias| + sum_k |w*x|
// (only fp32 summation order separates kernel and reference). bf16 is held bit-for-bit to the fp32
// kernel on the same bf16-rounded weights (same path, same tiles, exact widening).
using Platform.Engine.Kernels;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class GemmTests(ITestOutputHelper output)
{
    private enum Width { F32, BF16, F16 }

    private List<GemvPath> SupportedPaths() => NarrowGemvTests.SupportedPaths(output);

    /// <summary>Runs <paramref name="action"/> on <paramref name="path"/> with the GEMM tiles for every batch and the given chunk and k-block sizes.</summary>
    private static void OnTiles(GemvPath path, int chunkBytes, int kBlock, Action action)
    {
        int savedF32 = Gemm.GemvRowsLimitF32, savedNarrow = Gemm.GemvRowsLimitNarrow, savedQ8 = Gemm.GemvRowsLimitQ8, savedKBlock = Gemm.KBlock;
        long savedThreshold = Gemm.ParallelThresholdFmas;
        try
        {
            Gemm.GemvRowsLimitF32 = 0;
            Gemm.GemvRowsLimitNarrow = 0;
            Gemm.GemvRowsLimitQ8 = 0;
            Gemm.KBlock = kBlock;
            Gemm.ParallelThresholdFmas = chunkBytes < 4096 ? 0 : savedThreshold;
            NarrowGemvTests.OnPath(path, chunkBytes, action);
        }
        finally
        {
            Gemm.GemvRowsLimitF32 = savedF32;
            Gemm.GemvRowsLimitNarrow = savedNarrow;
            Gemm.GemvRowsLimitQ8 = savedQ8;
            Gemm.KBlock = savedKBlock;
            Gemm.ParallelThresholdFmas = savedThreshold;
        }
    }

    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        var random = new Random(8675309);
        (int Out, int In, int Batch)[] fixedShapes =
        [
            (1, 1, 1), (1, 7, 2), (2, 15, 3), (5, 16, 4), (6, 17, 5), (7, 31, 8), (13, 33, 64), (12, 256, 16),
            (19, 257, 32), (37, 515, 33), (64, 1031, 7), (130, 2048, 32), (97, 2049, 64), (3, 5000, 12),
        ];
        foreach ((int o, int i, int b) in fixedShapes)
            data.Add(o, i, b, random.Next(2) == 0);
        for (int batch = 1; batch <= 64; batch++)
            data.Add(random.Next(1, 150), random.Next(1, 700), batch, random.Next(2) == 0);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Every_width_matches_double_reference_on_every_path(int outFeatures, int inFeatures, int batch, bool withBias)
    {
        var random = new Random(outFeatures * 7919 + inFeatures * 31 + batch);
        float[] weight32 = NarrowGemvTests.RandomFloats(random, outFeatures * inFeatures);
        ushort[] weightBF16 = weight32.Select(NarrowGemvTests.RoundToBFloat16).ToArray();
        Half[] weightF16 = weight32.Select(v => (Half)v).ToArray();
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        float[]? bias = withBias ? NarrowGemvTests.RandomFloats(random, outFeatures) : null;
        var exact = new Dictionary<Width, double[]>
        {
            [Width.F32] = weight32.Select(w => (double)w).ToArray(),
            [Width.BF16] = weightBF16.Select(w => (double)Gemv.WidenBFloat16(w)).ToArray(),
            [Width.F16] = weightF16.Select(w => (double)w).ToArray(),
        };
        foreach (var path in SupportedPaths())
            foreach ((int chunkBytes, int kBlock) in new[] { (256 * 1024, Gemm.KBlock), (512, 32) })
                OnTiles(path, chunkBytes, kBlock, () =>
                {
                    string where = $"{path} chunk {chunkBytes} k-block {kBlock}";
                    AssertNearReference(RunF32(weight32, outFeatures, inFeatures, input, batch, bias), exact[Width.F32], outFeatures, inFeatures, input, batch, bias, $"fp32 {where}");
                    AssertNearReference(RunBF16(weightBF16, outFeatures, inFeatures, input, batch, bias), exact[Width.BF16], outFeatures, inFeatures, input, batch, bias, $"bf16 {where}");
                    AssertNearReference(RunF16(weightF16, outFeatures, inFeatures, input, batch, bias), exact[Width.F16], outFeatures, inFeatures, input, batch, bias, $"fp16 {where}");
                });
    }

    [Theory]
    [InlineData(1, 2048, 2)]
    [InlineData(37, 515, 3)]
    [InlineData(64, 1000, 8)]
    [InlineData(19, 77, 13)]
    [InlineData(131, 2049, 32)]
    [InlineData(11, 333, 64)]
    public void BF16_equals_fp32_compute_on_the_same_rounded_weights(int outFeatures, int inFeatures, int batch)
    {
        var random = new Random(outFeatures + inFeatures + batch);
        ushort[] weight = NarrowGemvTests.RandomBFloat16(random, outFeatures * inFeatures);
        float[] asFloat = weight.Select(Gemv.WidenBFloat16).ToArray();
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        float[] bias = NarrowGemvTests.RandomFloats(random, outFeatures);
        foreach (var path in SupportedPaths())
            OnTiles(path, 4096, Gemm.KBlock, () =>
            {
                float[] narrow = RunBF16(weight, outFeatures, inFeatures, input, batch, bias);
                float[] wide = RunF32(asFloat, outFeatures, inFeatures, input, batch, bias);
                for (int i = 0; i < narrow.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(narrow[i]) == BitConverter.SingleToInt32Bits(wide[i]),
                        $"{path}: output {i}: bf16 kernel {narrow[i]:R} vs fp32 kernel on the widened weights {wide[i]:R}");
            });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(40)]
    public void Default_routing_matches_the_reference_on_both_sides_of_the_gemv_crossover(int batch)
    {
        const int outFeatures = 45, inFeatures = 301;
        var random = new Random(batch);
        float[] weight = NarrowGemvTests.RandomFloats(random, outFeatures * inFeatures);
        ushort[] weightBF16 = weight.Select(NarrowGemvTests.RoundToBFloat16).ToArray();
        float[] input = NarrowGemvTests.RandomFloats(random, batch * inFeatures);
        float[] bias = NarrowGemvTests.RandomFloats(random, outFeatures);
        output.WriteLine($"batch {batch}: fp32 on {(batch < Gemm.GemvRowsLimitF32 ? "Gemv" : "the Gemm tiles")}, bf16 on {(batch < Gemm.GemvRowsLimitNarrow ? "Gemv" : "the Gemm tiles")}");
        AssertNearReference(RunF32(weight, outFeatures, inFeatures, input, batch, bias), weight.Select(w => (double)w).ToArray(),
            outFeatures, inFeatures, input, batch, bias, $"fp32 default path {Gemv.ActivePath}");
        AssertNearReference(RunBF16(weightBF16, outFeatures, inFeatures, input, batch, bias), weightBF16.Select(w => (double)Gemv.WidenBFloat16(w)).ToArray(),
            outFeatures, inFeatures, input, batch, bias, $"bf16 default path {Gemv.ActivePath}");
    }

    private static void AssertNearReference(float[] actual, double[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias, string what)
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
                    $"{what} [{outFeatures}x{inFeatures}] batch {batch}: out[{b},{n}] = {got:R}, float64 reference {sum:R} (scale {scale:G3})");
            }
    }

    private static float[] RunF32(float[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (float* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemm.MultiplyF32(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }

    private static float[] RunBF16(ushort[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (ushort* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemm.MultiplyBF16(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }

    private static float[] RunF16(Half[] weight, int outFeatures, int inFeatures, float[] input, int batch, float[]? bias)
    {
        var result = new float[batch * outFeatures];
        fixed (Half* w = weight) fixed (float* x = input) fixed (float* y = result) fixed (float* b = bias)
            Gemm.MultiplyF16(w, outFeatures, inFeatures, x, batch, y, b);
        return result;
    }
}
