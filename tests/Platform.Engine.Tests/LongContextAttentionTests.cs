// The CPU attention kernels inside the model at long context: a 4,000-token
// prompt prefilled in uneven chunks over a shuffled block table (the tiled
// prefill kernel, each chunk after earlier context), then 16 decode steps (the
// split decode kernel: 4,000 keys are 8 parts), every logit against the naive
// float64 reference; once with full attention and once with qwen2's sliding
// window in the upper layer. And the peak memory of a long prompt on the small
// preset, which no O(context²) buffer may reach.
using Platform.Core.Models;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using TorchSharp;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class LongContextAttentionTests(ITestOutputHelper output)
{
    private const int BlockSize = 16;

    [Theory]
    [InlineData("llama", null)]
    [InlineData("qwen2", 1000)]
    public void Long_prompt_in_chunks_then_decode_matches_the_float64_reference(string modelType, int? window)
    {
        string dir = TestModels.Get(TestModels.TinySliding(modelType, window, fromLayer: window is null ? 0 : 1));
        var rng = new Random(17);
        int prompt = 4000, decodeSteps = 16, total = prompt + decodeSteps;
        var tokens = Enumerable.Range(0, total).Select(_ => rng.Next(0, 500)).ToList();
        var expected = new NaiveReference(dir).Logits(tokens);

        using var model = LlamaModel.Load(dir, torch.float32);
        Assert.Equal(PrefillAttentionPath.Flash, model.PrefillAttention);
        var c = model.Config;
        int blocksNeeded = (total + BlockSize - 1) / BlockSize;
        var blocks = Enumerable.Range(0, blocksNeeded + 20).OrderBy(_ => rng.Next()).Take(blocksNeeded).ToArray();
        using var kv = new PagedKvStore(c.NumLayers, blocksNeeded + 20, BlockSize, c.NumKvHeads, c.HeadDim, torch.float32);
        double worst = 0;

        int start = 0;
        foreach (int chunk in new[] { 1500, 999, 1001, 500 })
        {
            var batch = new ForwardBatch();
            batch.AddSequence(tokens, start, chunk, blocks, BlockSize);
            batch.LogitRows.AddRange(Enumerable.Range(0, chunk));
            using (torch.NewDisposeScope())
            using (torch.no_grad())
            {
                var logits = model.Forward(batch, kv).data<float>().ToArray();
                for (int t = 0; t < chunk; t++)
                    worst = Math.Max(worst, NumericsTests.AssertClose(expected[start + t], logits.AsSpan(t * c.VocabSize, c.VocabSize), $"prefill position {start + t}"));
            }
            start += chunk;
        }
        Assert.Equal(prompt, start);
        for (int t = prompt; t < total; t++)
        {
            var step = new ForwardBatch();
            step.AddSequence(tokens, t, 1, blocks, BlockSize);
            step.LogitRows.Add(0);
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var logits = model.Forward(step, kv).data<float>().ToArray();
            worst = Math.Max(worst, NumericsTests.AssertClose(expected[t], logits, $"decode position {t}"));
        }
        output.WriteLine($"{modelType} window {(window is null ? "none" : $"{window}")}: worst logit error {worst:E2} over {total} positions");
    }
}

/// <summary>
/// Peak RSS of a long prompt on the small preset. Runs alone (its own non-parallel collection) so no other test's
/// memory lands in the process's high-water mark.
/// </summary>
[Collection(PeakMemoryCollection.Name)]
public sealed class LongPromptPeakMemoryTests(ITestOutputHelper output)
{
    /// <summary>
    /// Room above the resident weights and the KV written. Measured on the tiled path: ~460 MB at 1,024-token chunks
    /// (~600 MB at 2,048): the forward pass keeps every layer's temporaries until the caller's dispose scope ends
    /// (~60 MB per layer per 1,024 tokens) and libtorch's first large GEMMs grow its own buffers by ~200 MB. The
    /// libtorch gather path needs more at this size (measured ~840 MB beyond the KV: per layer its mask is
    /// 4 × 1,024 × 8,192 floats, 134 MB, and SDPA's scores 2 × 4,096 × 8,192, 268 MB); the test runs it too and
    /// requires it to break the bound, so the bound is known to catch an O(context²) buffer.
    /// </summary>
    private const long MarginBytes = 640L << 20;

    private const int ChunkTokens = 1024;

    /// <summary>
    /// The whole small preset at 8,192 tokens, on the tiled path and on the libtorch gather path, which must break the
    /// bound: 8K already makes an O(context²) buffer larger than the margin.
    /// </summary>
    [Fact]
    public void A_long_prompt_stays_under_weights_plus_kv_plus_a_fixed_margin()
    {
        string dir = TestModels.Get(new RandomModelOptions { Preset = "small", Seed = 5 });
        using var model = LlamaModel.Load(dir, torch.float32);
        const int promptTokens = 8192;
        var (tokens, table, kvBytes) = Prompt(model, promptTokens);

        var (before, peak) = PeakOfPrompt(model, tokens, table);
        AssertUnderBound("tiled", promptTokens, before, peak, kvBytes, model.ParameterBytes);

        model.PrefillAttention = PrefillAttentionPath.TorchGather;
        var (gatherBefore, gatherPeak) = PeakOfPrompt(model, tokens, table);
        output.WriteLine($"libtorch gather: RSS before {gatherBefore >> 20} MB, peak {gatherPeak >> 20} MB, growth beyond the KV {(gatherPeak - gatherBefore - kvBytes) >> 20} MB");
        Assert.True(gatherPeak > gatherBefore + kvBytes + MarginBytes,
            $"the gather path's O(context²) mask and scores stayed under the bound ({gatherPeak >> 20} MB): the margin is too loose to catch one");
    }

    /// <summary>
    /// 32,768 tokens (the presets' maximum position) on the tiled path, with the small preset's shapes but one decoder
    /// layer: four layers at 32K take minutes of attention on two cores, and what could grow with the context (a mask,
    /// scores, gathered K/V, the kernel's shared Kᵀ) is per layer; the KV of the layer is in the bound. At 32K an
    /// O(context²) buffer is far above the margin: the gather path's mask for one 1,024-token chunk alone is
    /// 4 × 1,024 × 32,768 floats (512 MB) and SDPA's scores twice that.
    /// </summary>
    [Fact]
    public void A_32k_prompt_stays_under_weights_plus_kv_plus_a_fixed_margin()
    {
        string dir = TestModels.Get(new RandomModelOptions { Preset = "small", Seed = 5, Layers = 1 });
        using var model = LlamaModel.Load(dir, torch.float32);
        const int promptTokens = 32768;
        Assert.True(promptTokens <= model.Config.MaxPositionEmbeddings, "the prompt must fit the model's positions");
        var (tokens, table, kvBytes) = Prompt(model, promptTokens);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (before, peak) = PeakOfPrompt(model, tokens, table);
        output.WriteLine($"one layer, {promptTokens} tokens in {clock.Elapsed.TotalSeconds:F1} s");
        AssertUnderBound("tiled", promptTokens, before, peak, kvBytes, model.ParameterBytes);
    }

    private static (List<int> Tokens, int[] Table, long KvBytes) Prompt(LlamaModel model, int promptTokens)
    {
        var c = model.Config;
        int blocks = promptTokens / 16;
        var table = Enumerable.Range(0, blocks).ToArray();
        var rng = new Random(2);
        var tokens = Enumerable.Range(0, promptTokens).Select(_ => rng.Next(0, c.VocabSize)).ToList();
        long kvBytes = PagedKvStore.BytesPerBlockFor(c.NumLayers, 16, c.NumKvHeads, c.HeadDim, torch.ScalarType.Float32) * blocks;
        return (tokens, table, kvBytes);
    }

    private void AssertUnderBound(string path, int promptTokens, long before, long peak, long kvBytes, long weightBytes)
    {
        output.WriteLine($"{path}: RSS before the prompt {before >> 20} MB (weights {weightBytes >> 20} MB), peak {peak >> 20} MB, " +
            $"KV {kvBytes >> 20} MB, growth beyond the KV {(peak - before - kvBytes) >> 20} MB (margin {MarginBytes >> 20} MB)");
        Assert.True(peak <= before + kvBytes + MarginBytes,
            $"a {promptTokens}-token prompt peaked at {peak >> 20} MB, above {before >> 20} MB + KV {kvBytes >> 20} MB + margin {MarginBytes >> 20} MB: " +
            "some buffer grows with the context (a mask or gathered K/V?)");
    }

    /// <summary>RSS just before the prompt (after a short warm-up) and the peak while it is prefilled in chunks into fresh pools.</summary>
    private static (long Before, long Peak) PeakOfPrompt(LlamaModel model, List<int> tokens, int[] table)
    {
        var c = model.Config;
        using var kv = new PagedKvStore(c.NumLayers, table.Length, 16, c.NumKvHeads, c.HeadDim, torch.float32);
        // Warm up libtorch and our kernel pools on a short prompt, then measure from here.
        Prefill(model, kv, tokens, 0, 64, table);
        GC.Collect();
        long before = Status("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5");   // resets VmHWM to the current RSS
        for (int start = 0; start < tokens.Count; start += ChunkTokens)
            Prefill(model, kv, tokens, start, ChunkTokens, table);
        return (before, Status("VmHWM"));
    }

    private static void Prefill(LlamaModel model, PagedKvStore kv, List<int> tokens, int start, int count, int[] table)
    {
        var batch = new ForwardBatch();
        batch.AddSequence(tokens, start, count, table, 16);
        batch.LogitRows.Add(count - 1);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        model.Forward(batch, kv);
    }

    /// <summary>A size line of /proc/self/status ("VmRSS", "VmHWM") in bytes.</summary>
    private static long Status(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        throw new InvalidOperationException($"/proc/self/status has no {field} line");
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PeakMemoryCollection
{
    public const string Name = "PeakMemory";
}
