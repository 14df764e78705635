// The engine's logits against the naive float64 reference: prefill and every
// decode step, for llama and qwen2 configs and each RoPE scaling.
using Platform.Core.Models;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using TorchSharp;

namespace Platform.Engine.Tests;

public sealed class NumericsTests
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

    [Theory]
    [MemberData(nameof(Configs))]
    public void Prefill_and_decode_logits_match_the_float64_reference(string modelType, string rope)
    {
        foreach (var path in Enum.GetValues<DecodePath>()) CheckAgainstReference(modelType, rope, path);
    }

    private static void CheckAgainstReference(string modelType, string rope, DecodePath path)
    {
        string dir = TestModels.Get(TestModels.Tiny(modelType, Rope(rope)));
        var reference = new NaiveReference(dir);
        var rng = new Random(3);
        var tokens = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
        var expected = reference.Logits(tokens);

        using var model = LlamaModel.Load(dir, torch.float32);
        model.DecodePath = path;
        var c = model.Config;
        using var kv = new PagedKvStore(c.NumLayers, 8, 16, c.NumKvHeads, c.HeadDim, torch.float32);
        int[] blocks = [5, 2, 7];   // deliberately out of order

        // Prefill the first 30 tokens, every position's logits.
        int prefill = 30;
        var batch = new ForwardBatch();
        batch.AddSequence(tokens, 0, prefill, blocks, 16);
        batch.LogitRows.AddRange(Enumerable.Range(0, prefill));
        using (torch.NewDisposeScope())
        using (torch.no_grad())
        {
            var logits = model.Forward(batch, kv).data<float>().ToArray();
            for (int t = 0; t < prefill; t++) AssertClose(expected[t], logits.AsSpan(t * c.VocabSize, c.VocabSize), $"prefill position {t}");
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
            AssertClose(expected[t], logits, $"{path} decode position {t}");
        }
    }

    internal static void AssertClose(double[] expected, ReadOnlySpan<float> actual, string what, double tolerance = 1e-4)
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
    }
}
