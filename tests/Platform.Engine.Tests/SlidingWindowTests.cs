// Sliding-window attention (Mistral's sliding_window, Qwen2's use_sliding_window
// from max_window_layers on) held to the float64 reference: a window of 11 keys
// (shorter than the prompts, not a multiple of the 8-token blocks) through a
// whole prefill, a prefill in two chunks whose second chunk sees cached blocks,
// a decode in a mixed step, and batched decode of three sequences, on every
// decode path; bfloat16 compute within its tolerance; and the whole engine
// (scheduler chunks of 13 tokens, a prefix-cache hit) on the same model. And
// the window must matter: with it the logits past the window move far beyond
// the tolerance, so a path that ignored it could not pass.
using Platform.Core.Models;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Scheduling;
using static Platform.Engine.Tests.ReferenceSteps;
using TorchSharp;

namespace Platform.Engine.Tests;

public sealed class SlidingWindowTests
{
    private const int Window = 11;
    private const int BlockSize = 8;

    public static TheoryData<string, int> Models => new()
    {
        { "mistral", 0 },   // every layer slides
        { "qwen2", 1 },     // layer 0 attends fully, layer 1 slides (max_window_layers = 1)
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void Prefill_chunked_prefill_and_batched_decode_match_the_float64_reference(string modelType, int fromLayer)
    {
        string dir = TestModels.Get(TestModels.TinySliding(modelType, Window, fromLayer));
        var reference = new NaiveReference(dir);
        var rng = new Random(5);
        ReferenceSequence Make(int length, int[] blocks)
        {
            var tokens = Enumerable.Range(0, length).Select(_ => rng.Next(0, 500)).ToList();
            return new ReferenceSequence(tokens, blocks, reference.Logits(tokens));
        }
        // Prompts of 34, 21 (prefilled in chunks of 13 and 8) and 6 tokens, then decode steps; blocks out of order.
        var a = Make(44, [9, 3, 14, 0, 7, 11]);
        var b = Make(30, [5, 12, 1, 16]);
        var c = Make(15, [2, 15]);

        foreach (var path in Enum.GetValues<DecodePath>())
        {
            using var model = LlamaModel.Load(dir, torch.float32);
            Assert.Equal(Window, model.Config.SlidingWindow);
            Assert.Equal(fromLayer, model.Config.SlidingWindowFromLayer);
            model.DecodePath = path;
            using var kv = new PagedKvStore(model.Config.NumLayers, 18, BlockSize, model.Config.NumKvHeads, model.Config.HeadDim, torch.float32);
            // Step 1: all of a's prompt and b's first chunk.
            Step(model, kv, path, "prefill", (a, 0, 34), (b, 0, 13));
            // Step 2: a decodes (a mixed step: libtorch layers, the paged kernel for a), b's second chunk sees its cached
            // first one, c prefills whole.
            Step(model, kv, path, "mixed", (a, 34, 1), (b, 13, 8), (c, 0, 6));
            // Steps 3..: the three decode together, c past its window from position 11 on.
            for (int i = 0; i < 9; i++) Step(model, kv, path, "decode", (a, 35 + i, 1), (b, 21 + i, 1), (c, 6 + i, 1));
        }
    }

    [Fact]
    public void Bfloat16_compute_honours_the_window_within_its_tolerance()
    {
        string dir = TestModels.Get(TestModels.TinySliding("mistral", Window, dtype: NumericsTests.WeightsDtype(torch.ScalarType.BFloat16)));
        var reference = new NaiveReference(dir);
        var rng = new Random(8);
        var seq = new List<int>(Enumerable.Range(0, 30).Select(_ => rng.Next(0, 500)));
        var sequence = new ReferenceSequence(seq, [3, 0, 2, 1], reference.Logits(seq));
        using var model = LlamaModel.Load(dir, torch.bfloat16);
        using var kv = new PagedKvStore(model.Config.NumLayers, 4, BlockSize, model.Config.NumKvHeads, model.Config.HeadDim, torch.bfloat16);
        Step(model, kv, DecodePath.Native, "bfloat16 prefill", NumericsTests.BFloat16Tolerance, (sequence, 0, 13));
        Step(model, kv, DecodePath.Native, "bfloat16 chunk", NumericsTests.BFloat16Tolerance, (sequence, 13, 9));
        for (int p = 22; p < 30; p++) Step(model, kv, DecodePath.Native, "bfloat16 decode", NumericsTests.BFloat16Tolerance, (sequence, p, 1));
    }

    [Fact]
    public async Task The_engine_with_chunked_prefill_and_a_prefix_cache_hit_matches_the_reference()
    {
        string dir = TestModels.Get(TestModels.TinySliding("mistral", Window));
        var reference = new NaiveReference(dir);
        var rng = new Random(21);
        var prompt = Enumerable.Range(0, 50).Select(_ => rng.Next(0, 500)).ToList();
        // Chunks of 13 tokens: neither the window (11) nor the blocks (16) divide them.
        using var engine = TestModels.Engine(dir, new EngineOptions { NumKvBlocks = 64, MaxBatchTokens = 13, TargetStepMs = 0, DefaultSeed = 1, Threads = 2 });
        await Check(prompt, expectCached: false);
        // The same first 48 tokens (three full blocks, cached) and a different tail: the tail's queries see cached blocks.
        await Check([.. prompt.Take(48), .. Enumerable.Range(0, 7).Select(_ => rng.Next(0, 500))], expectCached: true);

        async Task Check(List<int> tokens, bool expectCached)
        {
            var sampling = new SamplingParams { MaxTokens = 10, Temperature = 0, IgnoreEos = true };
            var generated = new List<int>();
            var logits = new List<float[]>();
            int cached = 0;
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(tokens, sampling, ReturnLogits: true)))
            {
                generated.AddRange(chunk.TokenIds);
                if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
                cached = Math.Max(cached, chunk.CachedTokens);
            }
            Assert.Equal(expectCached, cached > 0);
            var expected = reference.Logits([.. tokens, .. generated.Take(generated.Count - 1)]);
            Assert.Equal(generated.Count, logits.Count);
            for (int i = 0; i < logits.Count; i++)
                NumericsTests.AssertClose(expected[tokens.Count - 1 + i], logits[i], $"engine, position {tokens.Count - 1 + i} (cached {cached})");
        }
    }

    [Fact]
    public void The_window_changes_the_logits_past_it_and_the_engine_follows_it()
    {
        string windowed = TestModels.Get(TestModels.TinySliding("mistral", Window));
        string full = TestModels.Get(TestModels.TinySliding("mistral", null));
        Assert.Null(ModelConfig.Load(full).SlidingWindow);
        var tokens = Enumerable.Range(0, 30).Select(i => (i * 37 + 11) % 500).ToList();
        var withWindow = new NaiveReference(windowed).Logits(tokens);
        var without = new NaiveReference(full).Logits(tokens);

        // Same weights: up to the window every query sees the same keys either way.
        for (int p = 0; p < Window; p++) Assert.True(MaxDifference(withWindow[p], without[p]) < 1e-9, $"position {p} should not depend on the window");
        // Past it the logits move by far more than the engine's 1e-4 tolerance.
        double moved = Enumerable.Range(Window, tokens.Count - Window).Max(p => MaxDifference(withWindow[p], without[p]));
        Assert.True(moved > 1e-2, $"the window moved the logits by only {moved:E2}");

        // The engine's prefill follows the window: close to the windowed reference, far from the full one.
        using var model = LlamaModel.Load(windowed, torch.float32);
        using var kv = new PagedKvStore(model.Config.NumLayers, 4, BlockSize, model.Config.NumKvHeads, model.Config.HeadDim, torch.float32);
        var batch = new ForwardBatch();
        batch.AddSequence(tokens, 0, tokens.Count, [2, 0, 3, 1], BlockSize);
        batch.LogitRows.Add(tokens.Count - 1);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var last = model.Forward(batch, kv).data<float>().ToArray();
        NumericsTests.AssertClose(withWindow[^1], last, "windowed engine, last position");
        Assert.True(MaxDifference(without[^1], last) > 1e-2, "the engine's logits match the model without its window");
    }

    private static double MaxDifference(double[] expected, ReadOnlySpan<float> actual)
    {
        double worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        return worst;
    }

    private static double MaxDifference(double[] a, double[] b)
    {
        double worst = 0;
        for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        return worst;
    }
}
