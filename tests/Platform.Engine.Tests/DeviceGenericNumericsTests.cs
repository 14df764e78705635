// The device-generic path (LlamaModel.Device.cs) against the float64 reference,
// on the test device (cpu unless PLATFORM_TEST_DEVICE says otherwise; on cpu
// with our GEMV and paged kernels off): two sequences over out-of-order blocks,
// a mixed first step (two prefills), a chunked prefill beside a decode, then
// batched decode steps (padded gathers of unequal contexts). float32 is held to
// 1e-4; bfloat16 and float16 to NumericsTests' tolerances (weights stored in
// that dtype so only activation and KV rounding differ).
// Greedy tokens of bfloat16/float16, and of the native cpu path, must match the
// generic float32 run step by step. Near-tie rule: a different token at a step
// is accepted only when the float32 run's logits of the two tokens are closer
// than the dtype's tolerance (relative above 1, as AssertClose measures), i.e.
// the runs disagree only where rounding alone can flip the argmax; the runs'
// contexts then differ, so the comparison stops there (the test says so).
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Torch;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

public sealed class DeviceGenericNumericsTests(ITestOutputHelper output)
{
    public static TheoryData<string, string, int?, int> Variants => MetaDeviceTests.Variants;

    [Theory]
    [MemberData(nameof(Variants))]
    public void Generic_path_matches_the_float64_reference_in_float32(string modelType, string rope, int? window, int fromLayer)
    {
        double worst = Check(MetaDeviceTests.ModelDir(modelType, rope, window, fromLayer), torch.float32, 1e-4);
        output.WriteLine($"{TestDevice.Describe()}; float32 {modelType}/{rope}/window {(window is { } w ? w.ToString(System.Globalization.CultureInfo.InvariantCulture) : "none")}: worst logit error {worst:E2}");
    }

    public static TheoryData<string, string, string> HalfConfigs => new()
    {
        { "bfloat16", "qwen2", "yarn" }, { "bfloat16", "llama", "none" }, { "bfloat16", "mistral", "none" },
        { "float16", "qwen2", "yarn" }, { "float16", "llama", "none" },
    };

    private static string HalfModelDir(string modelType, string rope, ScalarType dtype) =>
        TestModels.Get(modelType == "mistral"
            ? TestModels.TinySliding("mistral", 8, dtype: NumericsTests.WeightsDtype(dtype))
            : TestModels.Tiny(modelType, NumericsTests.Rope(rope), NumericsTests.WeightsDtype(dtype)));

    private static double ToleranceOf(ScalarType dtype) => dtype switch
    {
        ScalarType.BFloat16 => NumericsTests.BFloat16Tolerance,
        ScalarType.Float16 => NumericsTests.Float16Tolerance,
        _ => 1e-4,
    };

    [Theory]
    [MemberData(nameof(HalfConfigs))]
    public void Generic_path_in_bfloat16_and_float16_matches_the_float64_reference_within_tolerance(string dtype, string modelType, string rope)
    {
        var scalar = TorchDtypes.Parse(dtype);
        double worst = Check(HalfModelDir(modelType, rope, scalar), scalar, ToleranceOf(scalar));
        output.WriteLine($"{TestDevice.Describe()}; {dtype} {modelType}/{rope}: worst logit error {worst:E2} (tolerance {ToleranceOf(scalar)})");
    }

    private static double Check(string dir, ScalarType dtype, double tolerance)
    {
        var device = TestDevice.Resolve();
        var reference = new NaiveReference(dir);
        var rng = new Random(3);
        var a = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
        var b = Enumerable.Range(0, 34).Select(_ => rng.Next(0, 500)).ToList();
        var expectedA = reference.Logits(a);
        var expectedB = reference.Logits(b);
        using var model = LlamaModel.Load(dir, dtype, device: device);
        model.ForwardPath = ForwardPath.Generic;
        var c = model.Config;
        using var kv = new PagedKvStore(c.NumLayers, 8, 16, c.NumKvHeads, c.HeadDim, dtype, model.Device);
        int[] blocksA = [5, 2, 7], blocksB = [0, 6, 3];
        double worst = 0;

        // Each step: (sequence, start, count); every new position of each gets logits.
        var steps = new List<(int Seq, int Start, int Count)[]> { new[] { (0, 0, 24), (1, 0, 16) }, new[] { (1, 16, 14), (0, 24, 1) } };
        for (int t = 0; t < 15; t++)
        {
            var step = new List<(int, int, int)> { (0, 25 + t, 1) };
            if (30 + t < b.Count) step.Add((1, 30 + t, 1));
            steps.Add([.. step]);
        }
        foreach (var step in steps)
        {
            var batch = new ForwardBatch();
            var owners = new List<(double[][] Expected, int Position, string Name)>();
            foreach (var (seq, start, count) in step)
            {
                var slice = batch.AddSequence(seq == 0 ? a : b, start, count, seq == 0 ? blocksA : blocksB, 16);
                for (int i = 0; i < count; i++)
                {
                    batch.LogitRows.Add(slice.TokenStart + i);
                    owners.Add((seq == 0 ? expectedA : expectedB, start + i, seq == 0 ? "A" : "B"));
                }
            }
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var logits = HostLogits(model.Forward(batch, kv));
            for (int r = 0; r < owners.Count; r++)
            {
                var (expected, position, name) = owners[r];
                worst = Math.Max(worst, NumericsTests.AssertClose(expected[position], logits.AsSpan(r * c.VocabSize, c.VocabSize),
                    $"{dtype} generic, sequence {name} position {position} ({(step.Length > 1 ? "batched" : "alone")})", tolerance));
            }
        }
        return worst;
    }

    internal static float[] HostLogits(Tensor logits)
    {
        using var host = logits.cpu();
        return host.contiguous().data<float>().ToArray();
    }

    public static TheoryData<string, string> GreedyRuns => new()
    {
        { "bfloat16", "generic" }, { "float16", "generic" }, { "float32", "native" },
    };

    [Theory]
    [MemberData(nameof(GreedyRuns))]
    public void Greedy_tokens_match_the_generic_float32_run(string dtype, string path)
    {
        const int steps = 24;
        var scalar = TorchDtypes.Parse(dtype);
        string dir = HalfModelDir("qwen2", "yarn", scalar == ScalarType.Float32 ? ScalarType.BFloat16 : scalar);
        var prompt = Enumerable.Range(0, 12).Select(i => (i * 37 + 5) % 500).ToList();
        var (referenceTokens, referenceLogits) = Greedy(dir, torch.float32, ForwardPath.Generic, prompt, steps);
        var (tokens, _) = Greedy(dir, scalar, path == "native" ? ForwardPath.Native : ForwardPath.Generic, prompt, steps);
        double nearTie = ToleranceOf(scalar);
        for (int i = 0; i < steps; i++)
        {
            if (tokens[i] == referenceTokens[i]) continue;
            var row = referenceLogits[i];
            double gap = Math.Abs(row[referenceTokens[i]] - row[tokens[i]]) / Math.Max(1.0, Math.Abs(row[referenceTokens[i]]));
            Assert.True(gap < nearTie,
                $"{dtype} {path}: step {i} chose {tokens[i]} where float32 chose {referenceTokens[i]}, and their float32 logits differ by {gap:E2} (not a near-tie below {nearTie})");
            output.WriteLine($"{TestDevice.Describe()}; {dtype} {path}: {i} tokens equal, then a near-tie at step {i} (gap {gap:E2} < {nearTie}); compared no further");
            return;
        }
        output.WriteLine($"{TestDevice.Describe()}; {dtype} {path}: all {steps} greedy tokens equal the generic float32 run");
    }

    /// <summary>Greedy decoding of <paramref name="steps"/> tokens; the tokens and each step's float32 logits.</summary>
    private static (List<int> Tokens, List<float[]> Logits) Greedy(string dir, ScalarType dtype, ForwardPath path, List<int> prompt, int steps)
    {
        var device = path == ForwardPath.Native ? torch.CPU : TestDevice.Resolve();
        using var model = LlamaModel.Load(dir, dtype, device: device);
        model.ForwardPath = path;
        var c = model.Config;
        using var kv = new PagedKvStore(c.NumLayers, 4, 16, c.NumKvHeads, c.HeadDim, dtype, model.Device);
        int[] blocks = [3, 1, 0, 2];
        var tokens = new List<int>(prompt);
        var rows = new List<float[]>();
        int computed = 0;
        for (int i = 0; i < steps; i++)
        {
            var batch = new ForwardBatch();
            var slice = batch.AddSequence(tokens, computed, tokens.Count - computed, blocks, 16);
            batch.LogitRows.Add(slice.TokenStart + slice.NumTokens - 1);
            computed = tokens.Count;
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var row = HostLogits(model.Forward(batch, kv));
            rows.Add(row);
            tokens.Add(Platform.Engine.Sampling.Sampler.ArgMax(row));
        }
        return (tokens.Skip(prompt.Count).ToList(), rows);
    }
}
