// Elementwise.RmsNorm and Elementwise.SwiGlu (the decode step's vector element-wise ops) against a
// float64 reference on every path this CPU runs (NarrowGemvTests.SupportedPaths), over widths that
// leave every kind of tail (below one vector, a vector and a half, the TinyLlama widths), several
// rows for RMSNorm, gate values far into both tails of the sigmoid (where exp overflows to inf
// and silu goes to -0), and in-place use (output aliasing an input). Tolerances: 1e-5 relative
// for RMSNorm (fp32 sums of squares), 4e-6 relative + 1e-30 absolute for SwiGLU.
using Platform.Engine.Kernels;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class ElementwiseTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(2, 17)]
    [InlineData(1, 40)]
    [InlineData(4, 2048)]
    [InlineData(1, 2053)]
    public void RmsNorm_matches_double_reference_on_every_path(int rows, int width)
    {
        var random = new Random(rows * 1000 + width);
        float[] x = NarrowGemvTests.RandomFloats(random, rows * width);
        float[] weight = NarrowGemvTests.RandomFloats(random, width);
        const float eps = 1e-5f;
        foreach (var path in NarrowGemvTests.SupportedPaths(output))
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                var y = new float[rows * width];
                float[] inPlace = (float[])x.Clone();
                fixed (float* xp = x) fixed (float* wp = weight) fixed (float* yp = y) fixed (float* ip = inPlace)
                {
                    Elementwise.RmsNorm(xp, wp, yp, rows, width, eps);
                    Elementwise.RmsNorm(ip, wp, ip, rows, width, eps);
                }
                for (int r = 0; r < rows; r++)
                {
                    double sum = 0;
                    for (int i = 0; i < width; i++) sum += (double)x[r * width + i] * x[r * width + i];
                    double scale = 1 / Math.Sqrt(sum / width + eps);
                    for (int i = 0; i < width; i++)
                    {
                        double expected = x[r * width + i] * scale * weight[i];
                        float got = y[r * width + i];
                        Assert.True(Math.Abs(got - expected) <= 1e-5 * Math.Abs(expected) + 1e-30,
                            $"{path} {rows}x{width}: y[{r},{i}] = {got:R}, float64 reference {expected:R}");
                        Assert.Equal(got, inPlace[r * width + i]);
                    }
                }
            });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(16)]
    [InlineData(25)]
    [InlineData(5632)]
    [InlineData(5633)]
    public void SwiGlu_matches_double_reference_on_every_path(int count)
    {
        var random = new Random(count);
        // Gates spread over [-120, 120]: exp(-g) overflows fp32 below g = -88.7 and underflows above 103.
        float[] gate = Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2 - 1) * (random.Next(4) == 0 ? 120 : 6))).ToArray();
        float[] up = NarrowGemvTests.RandomFloats(random, count);
        foreach (var path in NarrowGemvTests.SupportedPaths(output))
            NarrowGemvTests.OnPath(path, 256 * 1024, () =>
            {
                var result = new float[count];
                float[] inPlace = (float[])gate.Clone();
                fixed (float* g = gate) fixed (float* u = up) fixed (float* o = result) fixed (float* ip = inPlace)
                {
                    Elementwise.SwiGlu(g, u, o, count);
                    Elementwise.SwiGlu(ip, u, ip, count);
                }
                for (int i = 0; i < count; i++)
                {
                    double expected = gate[i] / (1 + Math.Exp(-(double)gate[i])) * up[i];
                    Assert.True(Math.Abs(result[i] - expected) <= 4e-6 * Math.Abs(expected) + 1e-30,
                        $"{path} count {count}: out[{i}] = {result[i]:R} for gate {gate[i]:R}, up {up[i]:R}; float64 reference {expected:R}");
                    Assert.Equal(result[i], inPlace[i]);
                }
            });
    }
}
