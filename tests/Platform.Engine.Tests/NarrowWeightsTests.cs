// End to end with narrow weights: a bfloat16 (and a float16) random checkpoint served with
// WeightDtype auto (weights held at 16 bits, widened in registers) against the same checkpoint
// widened to float32 at load. Widening is exact, so the two runs compute on identical values and
// differ only in fp32 summation order: the logits must agree within 1e-4 × max(1, |logit|) (the
// bound EngineTests holds the decode paths to), and the greedy ids must be equal. Near-tie rule:
// if the ids part at some step, the float32 run's two best logits there must lie within 1e-3 of
// each other (a tie that summation order may break either way); the comparison stops at that step.
// Prefill of a prompt longer than Projection.MaxGemvRows runs libtorch's linear over blocks of the
// narrow weights widened one at a time (a small block size here forces many blocks). Also: resident
// weight bytes equal the checkpoint's bytes, and bad weight dtypes are refused with the choices.
using Platform.Core.Safetensors;
using Platform.Engine.Kernels;
using Platform.Engine.Model;
using Platform.Engine.Scheduling;
using Platform.Engine.Tests.Kernels;
using TorchSharp;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

[Collection(KernelCollection.Name)]
public sealed class NarrowWeightsTests(ITestOutputHelper output)
{
    private const double LogitTolerance = 1e-4;
    private const double NearTie = 1e-3;

    [Theory]
    [InlineData(SafetensorsDtype.BF16)]
    [InlineData(SafetensorsDtype.F16)]
    public async Task Greedy_ids_and_logits_of_narrow_weights_equal_the_float32_widened_run(SafetensorsDtype checkpoint)
    {
        string dir = TestModels.Get(TestModels.Tiny(dtype: checkpoint));
        var prompt = Enumerable.Range(0, 21).Select(i => (i * 37 + 5) % 500).ToList();
        var wide = await Greedy(dir, "float32", prompt);
        var paths = new List<GemvPath> { Gemv.ActivePath };
        if (Gemv.ActivePath == GemvPath.Vector512) paths.Add(GemvPath.Vector256);
        else output.WriteLine($"skipped: Vector512 end to end (active path {Gemv.ActivePath})");
        foreach (var path in paths)
        {
            (List<int> Tokens, List<float[]> Logits) narrow = default;
            NarrowGemvTests.OnPath(path, 256 * 1024, () => narrow = Greedy(dir, WeightDtype.Auto, prompt).GetAwaiter().GetResult());
            int agreed = CompareGreedy(wide, narrow, $"{checkpoint} on {path}");
            output.WriteLine($"{checkpoint} {path}: {agreed} of {wide.Tokens.Count} greedy ids equal");
        }
    }

    [Theory]
    [InlineData(SafetensorsDtype.BF16)]
    [InlineData(SafetensorsDtype.F16)]
    public void Prefill_over_blockwise_widened_weights_matches_float32(SafetensorsDtype checkpoint)
    {
        string dir = TestModels.Get(TestModels.Tiny(dtype: checkpoint));
        // Longer than Projection.MaxGemvRows, so the prefill takes the libtorch path under test.
        var tokens = Enumerable.Range(0, Projection.MaxGemvRows + 26).Select(i => (i * 53 + 11) % 500).ToList();
        float[] wide = LogitsDump.Compute(dir, tokens, torch.float32, "float32");
        long saved = Projection.WideningBlockBytes;
        float[] narrow;
        try
        {
            Projection.WideningBlockBytes = 4096; // a few rows per block: every matrix takes many blocks
            narrow = LogitsDump.Compute(dir, tokens, torch.float32, WeightDtype.Auto);
        }
        finally
        {
            Projection.WideningBlockBytes = saved;
        }
        Assert.Equal(wide.Length, narrow.Length);
        double worst = 0;
        for (int i = 0; i < wide.Length; i++)
        {
            double diff = Math.Abs(wide[i] - narrow[i]);
            worst = Math.Max(worst, diff);
            Assert.True(diff <= LogitTolerance * Math.Max(1, Math.Abs(wide[i])), $"logit {i}: float32 {wide[i]} vs narrow {narrow[i]}");
        }
        output.WriteLine($"{checkpoint}: max |logit difference| over {tokens.Count} positions = {worst:G3}");
    }

    [Theory]
    [InlineData(SafetensorsDtype.BF16, "bfloat16")]
    [InlineData(SafetensorsDtype.F16, "float16")]
    public void Auto_keeps_the_checkpoints_width_and_its_bytes(SafetensorsDtype checkpoint, string expected)
    {
        string dir = TestModels.Get(TestModels.Tiny(dtype: checkpoint));
        long checkpointBytes;
        using (var files = ModelWeights.Open(dir))
            checkpointBytes = files.TensorNames.Sum(n => files.Get(n).Info.ByteLength);
        using (var narrow = LlamaModel.Load(dir, torch.float32))
        {
            Assert.Equal(expected, Torch.TorchDtypes.Name(narrow.WeightType));
            Assert.Equal(checkpointBytes + NormAndBiasExtraBytes(narrow), narrow.ParameterBytes);
        }
        using var wide = LlamaModel.Load(dir, torch.float32, weightDtype: "float32");
        Assert.Equal(torch.float32, wide.WeightType);
        Assert.Equal(2 * checkpointBytes, wide.ParameterBytes);
    }

    [Fact]
    public void Bad_weight_dtypes_are_refused_naming_the_choices()
    {
        var error = Assert.Throws<ArgumentException>(() => new EngineOptions { WeightDtype = "int4" }.Validate());
        Assert.Contains("unknown weight dtype 'int4'; use one of auto, float32, bfloat16, float16", error.Message, StringComparison.Ordinal);
        string dir = TestModels.Get(TestModels.Tiny(dtype: SafetensorsDtype.BF16));
        Assert.Throws<ArgumentException>(() => LlmEngine.Load(dir, new EngineOptions { WeightDtype = "fp8", NumKvBlocks = 16 }));
        var mixed = Assert.Throws<ArgumentException>(() => LlamaModel.Load(dir, torch.bfloat16, weightDtype: "float16"));
        Assert.Contains("needs float32 compute", mixed.Message, StringComparison.Ordinal);
        Assert.Null(WeightDtype.Validate("BFloat16"));
    }

    /// <summary>Norms and biases are held in float32 compute while the checkpoint stores them at 2 bytes: the bytes that adds.</summary>
    private static long NormAndBiasExtraBytes(LlamaModel model)
    {
        var c = model.Config;
        long normElements = (2L * c.NumLayers + 1) * c.HiddenSize;
        long biasElements = c.AttentionBias ? (long)c.NumLayers * (c.NumHeads + 2 * c.NumKvHeads) * c.HeadDim : 0;
        return 2 * (normElements + biasElements);
    }

    private static async Task<(List<int> Tokens, List<float[]> Logits)> Greedy(string dir, string weightDtype, IReadOnlyList<int> prompt)
    {
        using var engine = LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 64, Threads = 2, DefaultSeed = 1, WeightDtype = weightDtype });
        var tokens = new List<int>();
        var logits = new List<float[]>();
        var sampling = new SamplingParams { MaxTokens = 24, Temperature = 0, IgnoreEos = true };
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling, ReturnLogits: true)))
        {
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
        }
        return (tokens, logits);
    }

    /// <summary>Steps whose ids agree before a documented near tie (or all of them); asserts the logit bound on each.</summary>
    private static int CompareGreedy((List<int> Tokens, List<float[]> Logits) wide, (List<int> Tokens, List<float[]> Logits) narrow, string what)
    {
        Assert.Equal(wide.Tokens.Count, narrow.Tokens.Count);
        for (int step = 0; step < wide.Tokens.Count; step++)
        {
            float[] a = wide.Logits[step], b = narrow.Logits[step];
            for (int j = 0; j < a.Length; j++)
                Assert.True(Math.Abs(a[j] - b[j]) <= LogitTolerance * Math.Max(1, Math.Abs(a[j])), $"{what}: step {step} logit {j}: float32 {a[j]} vs narrow {b[j]}");
            if (wide.Tokens[step] == narrow.Tokens[step]) continue;
            var best = a.OrderByDescending(v => v).Take(2).ToArray();
            Assert.True(best[0] - best[1] <= NearTie, $"{what}: greedy ids part at step {step} ({wide.Tokens[step]} vs {narrow.Tokens[step]}) without a near tie (gap {best[0] - best[1]})");
            return step;
        }
        return wide.Tokens.Count;
    }
}
