// SortedHead keeps exactly the tokens a full descending sort (ties by the lower id) followed by the top-k and top-p
// cut keeps, in the same order: flat and peaked rows, tied weights, tokens zeroed by min-p, vocabularies from 7 to
// 128K, every mix of top-k and top-p, and a second call on the same instance (its histogram must start clean).
using Platform.Engine.Sampling;

namespace Platform.Engine.Tests.Sampling;

public sealed class SortedHeadTests
{
    /// <summary>The kept tokens, most likely first: a full sort (ties by the lower id), then the top-k and top-p cut.</summary>
    internal static int[] Reference(float[] w, int topK, double topP)
    {
        var order = Enumerable.Range(0, w.Length).Where(i => w[i] > 0).OrderByDescending(i => w[i]).ThenBy(i => i).ToArray();
        int keep = topK > 0 ? Math.Min(topK, order.Length) : order.Length;
        if (topP < 1)
        {
            double total = 0;
            if (topK > 0)
                for (int i = 0; i < keep; i++) total += w[order[i]];
            else
                foreach (float x in w) if (x > 0) total += x;
            double cumulative = 0;
            for (int i = 0; i < keep; i++)
                if ((cumulative += w[order[i]] / total) >= topP) { keep = i + 1; break; }
        }
        return order[..keep];
    }

    private static float[] Weights(Random rng, int vocab, string shape, double minP)
    {
        var logits = new double[vocab];
        for (int i = 0; i < vocab; i++)
            logits[i] = shape switch
            {
                "flat" => rng.NextDouble() * 0.5,
                "peaked" => rng.NextDouble() * 30 * rng.NextDouble() * rng.NextDouble(),
                _ => rng.Next(0, 5) * 0.75,     // ties
            };
        double max = logits.Max();
        var w = logits.Select(l => (float)Math.Exp(l - max)).ToArray();
        for (int i = 0; i < vocab; i++) if (w[i] < minP) w[i] = 0;
        return w;
    }

    [Theory]
    [InlineData(7)]
    [InlineData(1000)]
    [InlineData(32_000)]
    [InlineData(128_256)]
    public void Keeps_what_a_full_sort_and_cut_keep_in_the_same_order(int vocab)
    {
        var rng = new Random(vocab);
        var head = new SortedHead();
        var order = new int[vocab];
        int checkedCuts = 0;
        foreach (string shape in new[] { "flat", "peaked", "ties" })
            foreach (double minP in new[] { 0.0, 0.05 })
            {
                var w = Weights(rng, vocab, shape, minP);
                foreach (int topK in new[] { 0, 1, 5, 50, 1000, vocab })
                    foreach (double topP in new[] { 1.0, 0.95, 0.5, 0.1 })
                    {
                        if (topK == 0 && topP >= 1) continue;
                        var expected = Reference(w, topK, topP);
                        int keep = head.Cut(w, topK, topP, order);
                        Assert.True(expected.AsSpan().SequenceEqual(order.AsSpan(0, keep)),
                            $"{shape}, min-p {minP}, top-k {topK}, top-p {topP}: kept {keep}, expected {expected.Length}");
                        checkedCuts++;
                    }
            }
        Assert.True(checkedCuts > 100);
    }
}
