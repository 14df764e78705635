// min_p drops every token less likely than that fraction of the most likely one, on the
// tempered distribution, before top-k and top-p; the draws that remain keep their proportions.
using Platform.Engine.Sampling;

namespace Platform.Engine.Tests.Sampling;

public sealed class MinPTests
{
    // Relative probabilities 1 : 0.6 : 0.3 : 0.05 at temperature 1.
    private static readonly float[] Logits = [0f, MathF.Log(0.6f), MathF.Log(0.3f), MathF.Log(0.05f)];

    private static int[] Counts(double minP, double temperature = 1.0, int draws = 4000)
    {
        var sampler = new Sampler();
        var counts = new int[Logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Sample(Logits, temperature, 0, 1.0, seed: 42, outputIndex: i, minP: minP)]++;
        return counts;
    }

    [Fact]
    public void Tokens_below_min_p_times_the_top_probability_are_never_drawn()
    {
        var off = Counts(0);
        Assert.All(off, c => Assert.True(c > 0));

        var half = Counts(0.5);
        Assert.Equal(0, half[2]);
        Assert.Equal(0, half[3]);
        // The survivors keep their 1 : 0.6 ratio (within sampling noise over 4,000 draws).
        Assert.InRange(half[1] / (double)half[0], 0.5, 0.7);

        var all = Counts(1.0);
        Assert.Equal(4000, all[0]);
    }

    [Fact]
    public void Min_p_applies_to_the_tempered_distribution()
    {
        // At temperature 2 the weights are 1 : 0.77 : 0.55 : 0.22, so 0.5 keeps three tokens.
        var counts = Counts(0.5, temperature: 2.0);
        Assert.True(counts[2] > 0);
        Assert.Equal(0, counts[3]);
    }
}
