// RoPE frequencies: spot checks against values worked out by hand from the
// published formulas (the engine's numerics test covers them end to end).
using Platform.Core.Models;

namespace Platform.Core.Tests.Models;

public sealed class RopeTests
{
    [Fact]
    public void Plain_and_linear_frequencies()
    {
        var plain = RopeFrequencies.Compute(8, 10000, RopeScaling.NoScaling, 2048);
        Assert.Equal([1.0, 0.1, 0.01, 0.001], plain.InverseFrequencies.Select(f => Math.Round(f, 12)));
        var linear = RopeFrequencies.Compute(8, 10000, new RopeScaling(RopeScalingType.Linear, Factor: 4), 2048);
        Assert.Equal(plain.InverseFrequencies.Select(f => f / 4), linear.InverseFrequencies);
        Assert.Equal(1.0, linear.AttentionScale);
    }

    [Fact]
    public void Llama3_keeps_high_frequencies_and_divides_low_ones()
    {
        var s = new RopeScaling(RopeScalingType.Llama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192);
        var plain = RopeFrequencies.Compute(128, 500000, RopeScaling.NoScaling, 131072).InverseFrequencies;
        var scaled = RopeFrequencies.Compute(128, 500000, s, 131072).InverseFrequencies;
        Assert.Equal(plain[0], scaled[0]);                  // wavelength 2π < 2048: unchanged
        Assert.Equal(plain[^1] / 8, scaled[^1], 15);        // wavelength > 8192: divided by the factor
        int mid = Enumerable.Range(0, 64).First(i => 2 * Math.PI / plain[i] is >= 2048 and <= 8192);
        Assert.InRange(scaled[mid], plain[mid] / 8, plain[mid]);
    }

    [Fact]
    public void Yarn_scales_attention_by_its_mscale()
    {
        var yarn = RopeFrequencies.Compute(64, 10000, new RopeScaling(RopeScalingType.Yarn, Factor: 4, OriginalMaxPositionEmbeddings: 4096), 16384);
        Assert.Equal(0.1 * Math.Log(4) + 1, yarn.AttentionScale, 12);
        var explicitFactor = RopeFrequencies.Compute(64, 10000, new RopeScaling(RopeScalingType.Yarn, Factor: 4, OriginalMaxPositionEmbeddings: 4096, AttentionFactor: 1.5), 16384);
        Assert.Equal(1.5, explicitFactor.AttentionScale);
    }
}
