// The int8 format (QuantizationQ8): quantize/dequantize round trips hold every weight within half
// a step (|w - q*d| <= d/2, d the stored fp16 scale), the scale is max|w|/127 rounded up (never
// more than one fp16 ulp above it) or the 2^-14 floor, and the edge cases: all-zero blocks,
// all-equal blocks, the largest and smallest magnitudes, non-finite weights, widths that are not
// a multiple of 32, and the tensor entry point reading float32, bfloat16 and float16 sources.
using Platform.Engine.Kernels;
using Platform.Engine.Model;
using Platform.Engine.Tests.Kernels;
using TorchSharp;

namespace Platform.Engine.Tests;

public sealed unsafe class QuantizationQ8Tests
{
    [Theory]
    [InlineData(32, 1)]
    [InlineData(2048, 2)]
    [InlineData(5632, 3)]
    public void Every_weight_is_within_half_a_step_of_its_dequantized_value(int inFeatures, int seed)
    {
        var random = new Random(seed);
        float[] row = new float[inFeatures];
        for (int k = 0; k < inFeatures; k++)
        {
            // Block magnitudes from 1e-6 (below the scale floor) to 1e3.
            float magnitude = MathF.Pow(10, -6 + 9 * (k / 32 % 10) / 9f);
            row[k] = magnitude * (float)(random.NextDouble() * 2 - 1);
        }
        AssertRoundTrip(row);
    }

    [Fact]
    public void All_zero_blocks_dequantize_to_zero_with_the_floor_scale()
    {
        byte[] packed = Int8GemvTests.Quantize(new float[64], 1, 64);
        Assert.Equal(QuantizationQ8.MinScale, ScaleOf(packed, 0));
        Assert.All(Int8GemvTests.Dequantize(packed, 1, 64), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(0.25f)]
    [InlineData(-3.7f)]
    [InlineData(1e-7f)]
    public void All_equal_blocks_round_trip_within_half_a_step(float value)
    {
        float[] row = Enumerable.Repeat(value, 64).ToArray();
        AssertRoundTrip(row);
        byte[] packed = Int8GemvTests.Quantize(row, 1, 64);
        float[] back = Int8GemvTests.Dequantize(packed, 1, 64);
        Assert.All(back, v => Assert.Equal(back[0], v));
    }

    [Fact]
    public void Extreme_magnitudes_round_trip_and_out_of_range_ones_are_refused()
    {
        float largest = (float)Half.MaxValue * 127f;
        AssertRoundTrip([largest, -largest, 1f, float.Epsilon, .. new float[28]]);
        AssertRoundTrip([1e-30f, -1e-38f, .. new float[30]]);
        var tooLarge = new float[32];
        tooLarge[5] = 1e7f;
        Assert.Throws<ArgumentException>(() => Int8GemvTests.Quantize(tooLarge, 1, 32));
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            var row = new float[32];
            row[17] = bad;
            var error = Assert.Throws<ArgumentException>(() => Int8GemvTests.Quantize(row, 1, 32));
            Assert.Contains("finite", error.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Widths_that_are_not_a_multiple_of_32_are_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => QuantizationQ8.RowBytes(33));
        Assert.Contains("multiple of 32", error.Message, StringComparison.Ordinal);
        Assert.False(QuantizationQ8.Supports(100));
        Assert.True(QuantizationQ8.Supports(5632));
        Assert.Equal(34L * 64, QuantizationQ8.RowBytes(2048));
    }

    [Theory]
    [InlineData(torch.ScalarType.Float32)]
    [InlineData(torch.ScalarType.BFloat16)]
    [InlineData(torch.ScalarType.Float16)]
    public void The_tensor_quantizer_equals_the_row_quantizer_on_the_widened_values(torch.ScalarType type)
    {
        const int outFeatures = 37, inFeatures = 96;
        var random = new Random(5);
        float[] values = NarrowGemvTests.RandomFloats(random, outFeatures * inFeatures);
        using var source = torch.tensor(values, [outFeatures, inFeatures]).to_type(type);
        using var widened = source.to_type(torch.float32);
        float[] wide = widened.data<float>().ToArray();
        using var packed = QuantizationQ8.Quantize(source);
        Assert.Equal(new long[] { outFeatures, QuantizationQ8.RowBytes(inFeatures) }, packed.shape);
        Assert.Equal(Int8GemvTests.Quantize(wide, outFeatures, inFeatures), packed.data<byte>().ToArray());
    }

    private static Half ScaleOf(byte[] packed, int block) => BitConverter.ToHalf(packed, block * QuantizationQ8.BlockBytes);

    private static void AssertRoundTrip(float[] row)
    {
        int inFeatures = row.Length;
        byte[] packed = Int8GemvTests.Quantize(row, 1, inFeatures);
        float[] back = Int8GemvTests.Dequantize(packed, 1, inFeatures);
        for (int b = 0; b < inFeatures / 32; b++)
        {
            float d = (float)ScaleOf(packed, b);
            float maxAbs = row.Skip(b * 32).Take(32).Max(MathF.Abs);
            // The scale: max/127 rounded up to fp16 (at most one fp16 ulp, 2^-10 relative, above), or the floor.
            Assert.True(d >= maxAbs / 127f, $"block {b}: scale {d} below max/127 = {maxAbs / 127f}");
            Assert.True(d == (float)QuantizationQ8.MinScale || d <= maxAbs / 127f * (1 + 1f / 1024), $"block {b}: scale {d} more than one ulp above max/127 = {maxAbs / 127f}");
            for (int i = b * 32; i < (b + 1) * 32; i++)
                Assert.True(Math.Abs((double)row[i] - back[i]) <= d / 2.0, $"weight {i}: {row[i]:R} came back as {back[i]:R} (scale {d})");
        }
    }
}
