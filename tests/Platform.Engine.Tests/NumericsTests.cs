// The engine's logits against the naive float64 reference: prefill and every
// decode step, for llama and qwen2 configs and each RoPE scaling; and bfloat16
// and float16 compute against the same reference, with weights stored in that
// dtype so both sides use the very same weights and only the rounding of
// activations and KV is left (tolerances below, also in docs/kvcache.md).
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Torch;
using TorchSharp;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class NumericsTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Configs => new()
    {
        { "llama", "none" }, { "qwen2", "none" }, { "mistral", "none" },
        { "llama", "linear" }, { "llama", "dynamic" }, { "llama", "llama3" }, { "llama", "yarn" }, { "qwen2", "yarn" },
    };

    internal static RopeScaling Rope(string name) => name switch
    {
        "linear" => new RopeScaling(RopeScalingType.Linear, Factor: 2.0),
        "dynamic" => new RopeScaling(RopeScalingType.Dynamic, Factor: 2.0),
        "llama3" => new RopeScaling(RopeScalingType.Llama3, Factor: 8.0, LowFreqFactor: 1.0, HighFreqFactor: 4.0, OriginalMaxPositionEmbeddings: 64),
        "yarn" => new RopeScaling(RopeScalingType.Yarn, Factor: 4.0, OriginalMaxPositionEmbeddings: 64),
        _ => RopeScaling.NoScaling,
    };

    /// <summary>
    /// Largest logit error of bfloat16 compute against the float64 reference (relative above 1, absolute
    /// below): 8 bits of mantissa in every weight-times-activation, KV entry and logit. Measured worst on
    /// these tiny models (logits of magnitude ~1): 0.04–0.07 (printed by the test); the known figure for a
    /// Qwen2/YaRN model on CPU is ~0.05 of float32 logits.
    /// </summary>
    public const double BFloat16Tolerance = 0.1;
    /// <summary>Same for float16 compute (11 bits of mantissa): measured worst ~0.007.</summary>
    public const double Float16Tolerance = 0.02;

    [Theory]
    [MemberData(nameof(Configs))]
    public void Prefill_and_decode_logits_match_the_float64_reference(string modelType, string rope)
    {
        foreach (var path in Enum.GetValues<DecodePath>()) CheckAgainstReference(modelType, rope, path, torch.float32, 1e-4);
    }

    public static TheoryData<string, string, string> HalfConfigs => new()
    {
        { "bfloat16", "qwen2", "yarn" }, { "bfloat16", "llama", "none" }, { "bfloat16", "llama", "llama3" },
        { "float16", "qwen2", "yarn" }, { "float16", "llama", "none" },
    };

    [Theory]
    [MemberData(nameof(HalfConfigs))]
    public void Bfloat16_and_float16_compute_match_the_float64_reference_within_tolerance(string dtype, string modelType, string rope)
    {
        var scalar = TorchDtypes.Parse(dtype);
        double worst = CheckAgainstReference(modelType, rope, DecodePath.Native, scalar, scalar == torch.ScalarType.BFloat16 ? BFloat16Tolerance : Float16Tolerance);
        output.WriteLine($"{dtype} {modelType}/{rope}: worst logit error {worst:E2}");
    }

    internal static SafetensorsDtype WeightsDtype(torch.ScalarType compute) => compute switch
    {
        torch.ScalarType.BFloat16 => SafetensorsDtype.BF16,
        torch.ScalarType.Float16 => SafetensorsDtype.F16,
        _ => SafetensorsDtype.F32,
    };

    private static double CheckAgainstReference(string modelType, string rope, DecodePath path, torch.ScalarType dtype, double tolerance)
    {
        string dir = TestModels.Get(TestModels.Tiny(modelType, Rope(rope), WeightsDtype(dtype)));
        var reference = new NaiveReference(dir);
        var rng = new Random(3);
        var tokens = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
        var expected = reference.Logits(tokens);

        using var model = LlamaModel.Load(dir, dtype);
        model.DecodePath = path;
        var c = model.Config;
        using var kv = new PagedKvStore(c.NumLayers, 8, 16, c.NumKvHeads, c.HeadDim, dtype);
        int[] blocks = [5, 2, 7];   // deliberately out of order
        double worst = 0;

        // Prefill the first 30 tokens, every position's logits.
        int prefill = 30;
        var batch = new ForwardBatch();
        batch.AddSequence(tokens, 0, prefill, blocks, 16);
        batch.LogitRows.AddRange(Enumerable.Range(0, prefill));
        using (torch.NewDisposeScope())
        using (torch.no_grad())
        {
            var logits = model.Forward(batch, kv).data<float>().ToArray();
            for (int t = 0; t < prefill; t++) worst = Math.Max(worst, AssertClose(expected[t], logits.AsSpan(t * c.VocabSize, c.VocabSize), $"{dtype} prefill position {t}", tolerance));
        }
        // Then decode one token at a time over the paged cache.
        for (int t = prefill; t < tokens.Count; t++)
        {
            var step = new ForwardBatch();
            step.AddSequence(tokens, t, 1, blocks, 16);
            step.LogitRows.Add(0);
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var logits = model.Forward(step, kv).data<float>().ToArray();
            worst = Math.Max(worst, AssertClose(expected[t], logits, $"{dtype} {path} decode position {t}", tolerance));
        }
        return worst;
    }

    /// <summary>
    /// Steps that mix sequences: two prefill chunks together, then a chunk beside another sequence's decode row (the
    /// decode row after the chunk's rows, so the small native step must pack the decode queries for its kernel and put
    /// their outputs back), then two decode rows. Every row's logits against the float64 reference, on every path.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)] // qwen2 with a 12-key window from layer 1: chunk and decode rows each see only their window there
    public void Steps_mixing_prefill_chunks_and_decode_rows_match_the_float64_reference(bool slidingWindow)
    {
        string dir = TestModels.Get(slidingWindow ? TestModels.TinySliding("qwen2", 12, fromLayer: 1) : TestModels.Tiny("llama"));
        var reference = new NaiveReference(dir);
        var rng = new Random(11);
        ReferenceSequence Make(int[] blocks)
        {
            var tokens = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
            return new ReferenceSequence(tokens, blocks, reference.Logits(tokens));
        }
        var seqA = Make([5, 2, 7]);
        var seqB = Make([0, 6, 3]);
        foreach (var path in Enum.GetValues<DecodePath>())
        {
            using var model = LlamaModel.Load(dir, torch.float32);
            model.DecodePath = path;
            var c = model.Config;
            using var kv = new PagedKvStore(c.NumLayers, 8, 16, c.NumKvHeads, c.HeadDim, torch.float32);
            ReferenceSteps.Step(model, kv, path, "two chunks", (seqA, 0, 30), (seqB, 0, 10));
            ReferenceSteps.Step(model, kv, path, "chunk, then a decode row", (seqB, 10, 12), (seqA, 30, 1));
            ReferenceSteps.Step(model, kv, path, "two decode rows", (seqA, 31, 1), (seqB, 22, 1));
        }
    }

    internal static double AssertClose(double[] expected, ReadOnlySpan<float> actual, string what, double tolerance = 1e-4)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(expected[i] - actual[i]) / Math.Max(1.0, Math.Abs(expected[i]));
            if (err > worst) { worst = err; at = i; }
        }
        Assert.True(worst <= tolerance, $"{what}: logit {at} differs by {worst:E2} (expected {expected[at]}, got {actual[at]})");
        return worst;
    }
}
