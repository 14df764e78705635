// The step cost model with sliding-window layers: a chunk's predicted flops equal
// a brute-force count of its (query, key) pairs (every earlier key in a full
// layer, at most the window in a sliding one), the chunk size chosen for a
// budget is the largest that fits, and a model that slides every layer costs
// the same per chunk at any context past the window, so its long prefills are
// not cut into needlessly small chunks.
using Platform.Core.Models;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class StepCostModelTests
{
    private const double Linear = 22.6e6;
    private const double PerPairPerLayer = 4.0 * 8 * 64;
    private const int Window = 4096;

    [Fact]
    public void Sliding_layers_count_at_most_the_window_of_pairs_per_query()
    {
        // One full layer and three sliding ones.
        var cost = new StepCostModel(Linear, PerPairPerLayer, TimeSpan.FromMilliseconds(500), 3 * PerPairPerLayer, Window);
        foreach (var (n, c) in new[] { (1, 0), (100, 0), (512, 3900), (512, 20_000), (5000, 0), (1, 5000) })
        {
            double full = 0, sliding = 0;
            for (int i = 1; i <= n; i++)
            {
                full += c + i;
                sliding += Math.Min(c + i, Window);
            }
            double expected = n * Linear + PerPairPerLayer * full + 3 * PerPairPerLayer * sliding;
            Assert.True(Math.Abs(cost.ChunkFlops(n, c) - expected) <= 1e-9 * expected, $"{n} tokens after {c}: {cost.ChunkFlops(n, c):E6} vs {expected:E6}");
        }

        cost.SetRate(50e9);
        double budget = cost.StepFlopBudget;
        foreach (int context in new[] { 0, 4000, 16_000, 32_000 })
        {
            int n = cost.MaxTokensWithin(budget, context, 100_000);
            Assert.True(n > 0 && cost.ChunkFlops(n, context) <= budget, $"at {context}: {n} tokens do not fit");
            Assert.True(cost.ChunkFlops(n + 1, context) > budget, $"at {context}: {n + 1} tokens would still fit");
        }
    }

    [Fact]
    public void A_model_that_slides_every_layer_costs_the_same_chunk_at_any_context_past_the_window()
    {
        var config = RandomModelGenerator.PresetConfig("small", "mistral") with { SlidingWindow = Window };
        var cost = StepCostModel.For(config, TimeSpan.FromMilliseconds(250));
        Assert.Equal(0, cost.AttentionFlopsPerPair);
        Assert.Equal(config.NumLayers * PerPairPerLayer, cost.SlidingFlopsPerPair);
        Assert.Equal(cost.ChunkFlops(512, 8000), cost.ChunkFlops(512, 30_000));
        cost.SetRate(50e9);
        Assert.Equal(cost.MaxTokensWithin(cost.StepFlopBudget, Window, 100_000), cost.MaxTokensWithin(cost.StepFlopBudget, 30_000, 100_000));

        // Without the window the same model's chunk at 30K is far smaller.
        var full = StepCostModel.For(config with { SlidingWindow = null }, TimeSpan.FromMilliseconds(250));
        full.SetRate(50e9);
        Assert.True(full.MaxTokensWithin(full.StepFlopBudget, 30_000, 100_000) < cost.MaxTokensWithin(cost.StepFlopBudget, 30_000, 100_000) / 2);

        // qwen2 with max_window_layers = 2 of 4: half the layers' pairs are windowed.
        var qwen = RandomModelGenerator.PresetConfig("small", "qwen2") with { SlidingWindow = Window, SlidingWindowFromLayer = 2 };
        var split = StepCostModel.For(qwen, TimeSpan.Zero);
        Assert.Equal(2 * PerPairPerLayer, split.AttentionFlopsPerPair);
        Assert.Equal(2 * PerPairPerLayer, split.SlidingFlopsPerPair);
    }
}
