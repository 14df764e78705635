// The lanes types' SumEach (the decode kernel's batched score reduction: Width rows of Width floats
// to Width sums by one transpose) against float64 sums, on every lanes type this CPU runs. A lane
// order mistake in a transpose would put a key's score in another key's place, which the attention
// tests only see through the softmax; here each row has its own magnitude, so a swap is a failure.
using System.Numerics;
using System.Runtime.Intrinsics;
using Platform.Engine.Kernels;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

public sealed unsafe class AttentionLanesTests(ITestOutputHelper output)
{
    [Fact]
    public void SumEach_equals_each_rows_float64_sum_on_every_lanes_type_this_cpu_runs()
    {
        Check<LanesPortable, Vector<float>>("portable");
        Check<LanesScalar, float>("scalar");
        if (AttentionKernels.Vector256Supported) Check<Lanes256, Vector256<float>>("Vector256");
        else output.WriteLine("skipped Vector256: this CPU lacks AVX2/FMA");
        if (AttentionKernels.Vector512Supported) Check<Lanes512, Vector512<float>>("Vector512");
        else output.WriteLine("skipped Vector512: this CPU lacks AVX-512F");
    }

    private void Check<TL, TV>(string name) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        var rng = new Random(w);
        var rows = new float[w * w];
        var sums = new float[w];
        for (int trial = 0; trial < 50; trial++)
        {
            // Row t's values lie around t + 1, so every row's sum is distinct from the others'.
            for (int t = 0; t < w; t++)
                for (int i = 0; i < w; i++)
                    rows[t * w + i] = (float)((t + 1) * (1 + 0.1 * (rng.NextDouble() - 0.5)));
            fixed (float* r = rows, s = sums)
                TL.SumEach(r, s);
            for (int t = 0; t < w; t++)
            {
                double expected = 0;
                for (int i = 0; i < w; i++) expected += rows[t * w + i];
                Assert.True(Math.Abs(sums[t] - expected) <= 1e-5 * Math.Abs(expected), $"{name}, row {t}: {sums[t]} against {expected}");
            }
        }
        output.WriteLine($"{name}: {w} rows of {w} lanes, 50 trials");
    }
}
