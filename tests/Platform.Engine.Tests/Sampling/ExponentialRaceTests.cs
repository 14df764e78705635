// The host sampler's draw is an exponential race (Sampler.cs): it must pick each token with its tempered probability
// (after top-k and top-p), skip the logarithm only where a token cannot win, and move only when the logits move by
// more than rounding: a migrated request's re-prefilled logits differ from the decoded ones by ~1e-6, and the draw
// of the undisturbed run must survive that.
using Platform.Engine.Sampling;

namespace Platform.Engine.Tests.Sampling;

public sealed class ExponentialRaceTests
{
    private static readonly float[] Logits = [1.2f, 0.4f, -0.3f, 2.0f, 0.0f, -1.5f, 0.9f, 0.5f, -0.7f, 1.6f];

    /// <summary>Each token's probability after top-k and top-p: its weight over the kept weights' sum.</summary>
    private static double[] Expected(double temperature, int topK, double topP)
    {
        var w = Logits.Select(l => (float)Math.Exp((l - Logits.Max()) / temperature)).ToArray();
        var p = new double[w.Length];
        foreach (int i in SortedHeadTests.Reference(w, topK, topP)) p[i] = w[i];
        double sum = p.Sum();
        return p.Select(x => x / sum).ToArray();
    }

    [Theory]
    [InlineData(0.7, 0, 1.0)]
    [InlineData(1.0, 4, 1.0)]
    [InlineData(1.3, 0, 0.8)]
    [InlineData(0.9, 6, 0.9)]
    public void Draws_follow_the_tempered_distribution_after_top_k_and_top_p(double temperature, int topK, double topP)
    {
        const int Draws = 40_000;
        var sampler = new Sampler();
        var counts = new int[Logits.Length];
        for (int i = 0; i < Draws; i++) counts[sampler.Sample(Logits, temperature, topK, topP, seed: 1234, outputIndex: i)]++;
        var expected = Expected(temperature, topK, topP);
        for (int t = 0; t < Logits.Length; t++)
        {
            double mean = expected[t] * Draws, sigma = Math.Sqrt(Draws * expected[t] * (1 - expected[t]));
            if (expected[t] == 0) Assert.Equal(0, counts[t]);
            else Assert.True(Math.Abs(counts[t] - mean) <= 4.5 * sigma, $"token {t}: {counts[t]} draws, expected {mean:F0} ± {sigma:F0}");
        }
    }

    [Fact]
    public void Skipping_the_logarithm_never_changes_the_winner()
    {
        var rng = new Random(5);
        var sampler = new Sampler();
        var logits = new float[32_000];
        for (int draw = 0; draw < 300; draw++)
        {
            double scale = draw % 3 + 1;
            for (int i = 0; i < logits.Length; i++) logits[i] = (float)((rng.NextDouble() * 8 - 4) * scale);
            ulong seed = (ulong)rng.NextInt64();
            int outputIndex = rng.Next(0, 5000);
            // Every token's weight / E, with no shortcut.
            double max = logits.Max(), best = -1;
            int winner = -1;
            ulong key = Sampler.StepKey(seed, outputIndex);
            for (int i = 0; i < logits.Length; i++)
            {
                double score = (float)Math.Exp(logits[i] - max) / -Math.Log(Sampler.Uniform(key, i));
                if (score > best) (best, winner) = (score, i);
            }
            Assert.Equal(winner, sampler.Sample(logits, 1.0, 0, 1.0, seed, outputIndex));
        }
    }

    [Fact]
    public void A_draw_survives_logits_moved_by_a_small_perturbation()
    {
        // Walking the cumulative sum to a uniform (the sampler before the race) moved 77 of these 2,000 draws: the sum
        // of up to 32,000 weights before the drawn one shifts by far more than the gap between the two best candidates,
        // which is all the race depends on (it moved none).
        var rng = new Random(9);
        var sampler = new Sampler();
        var logits = new float[32_000];
        var moved = new float[logits.Length];
        int changed = 0;
        const int Draws = 2000;
        for (int draw = 0; draw < Draws; draw++)
        {
            for (int i = 0; i < logits.Length; i++)
            {
                logits[i] = (float)(rng.NextDouble() * 2 - 1);
                moved[i] = logits[i] + (float)((rng.NextDouble() * 2 - 1) * 1e-3);
            }
            ulong seed = (ulong)rng.NextInt64();
            if (sampler.Sample(logits, 0.9, 0, 1.0, seed, draw) != sampler.Sample(moved, 0.9, 0, 1.0, seed, draw)) changed++;
        }
        Assert.True(changed <= 8, $"{changed} of {Draws} draws moved under a 1e-3 perturbation of the logits");
    }
}
