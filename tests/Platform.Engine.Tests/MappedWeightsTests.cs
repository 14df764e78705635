// Weights used in place from the memory-mapped checkpoint (LlamaWeights, MappedTensors): a bf16
// checkpoint served with WeightDtype auto is not copied, so the weights' resident memory after a
// generation has touched every matrix is the checkpoint's bytes (plus the float32 norms, the only
// converted tensors), not twice that. Both layouts a checkpoint comes in are covered: ours (q/k/v
// and gate/up back to back, all mapped) and Hugging Face's, where safetensors sorts tensors by
// name, so k, o, q, v interleave and q/k/v is fused by one copy (its mapped source pages are then
// released so they do not count twice). Both layouts hold the same weights and must generate the
// same ids, and the model must be usable after the loader's own handles are gone.
using System.Globalization;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine.Model;
using Platform.Engine.Scheduling;
using TorchSharp;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class MappedWeightsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "mapped-weights-" + Guid.NewGuid().ToString("n"));

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A copy of the small bf16 test model in this test's own directory, in our layout or Hugging Face's sorted one.</summary>
    private string Model(bool sortedLikeHuggingFace)
    {
        string source = TestModels.Get(new RandomModelOptions { Preset = "small", Dtype = SafetensorsDtype.BF16, Seed = 5 });
        string dir = Path.Combine(_root, sortedLikeHuggingFace ? "sorted" : "ours");
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(source))
            if (!file.EndsWith(".safetensors", StringComparison.Ordinal)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        using var original = SafetensorsFile.Open(Path.Combine(source, "model.safetensors"));
        var writer = new SafetensorsWriter();
        var names = original.Tensors.Keys.ToList();
        if (sortedLikeHuggingFace) names.Sort(StringComparer.Ordinal);
        else names = [.. original.Tensors.Values.OrderBy(t => t.Begin).Select(t => t.Name)];
        foreach (var name in names)
        {
            var info = original.Tensors[name];
            byte[] bytes = original.GetBytes(info).ToArray();
            writer.Add(name, info.Dtype, info.Shape, () => bytes);
        }
        writer.Write(Path.Combine(dir, "model.safetensors"));
        return dir;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void A_bf16_models_resident_weights_are_its_checkpoint_bytes(bool sortedLikeHuggingFace)
    {
        string dir = Model(sortedLikeHuggingFace);
        string file = Path.Combine(dir, "model.safetensors");
        long checkpointBytes = new FileInfo(file).Length;
        var config = ModelConfig.Load(dir);
        long normBytes = (2L * config.NumLayers + 1) * config.HiddenSize * sizeof(float);
        long qkvBytes = (long)config.NumLayers * (config.NumHeads + 2 * config.NumKvHeads) * config.HeadDim * config.HiddenSize * 2;

        using var weights = LlamaWeights.Load(dir, config, torch.float32);
        Assert.Equal(torch.bfloat16, weights.WeightType);
        long copied = weights.ParameterBytes - weights.MappedBytes;
        // Only the float32 norms are converted; in Hugging Face's layout q/k/v is fused by a copy as well.
        Assert.Equal(normBytes + (sortedLikeHuggingFace ? qkvBytes : 0), copied);

        // Touch every matrix as a decode step does: each projection reads its whole weight.
        var projections = weights.Layers.SelectMany(l => new[] { l.Qkv, l.O, l.GateUp, l.Down }).Append(weights.LmHead);
        foreach (var projection in projections)
        {
            var x = new float[projection.InFeatures];
            var y = new float[projection.OutFeatures];
            x[0] = 1;
            fixed (float* input = x, result = y)
                projection.Forward(input, 1, result);
        }

        long mappedResident = MappedFiles.ResidentBytes(file);
        output.WriteLine($"checkpoint {checkpointBytes >> 10} KiB; resident from the map {mappedResident >> 10} KiB; copied {copied >> 10} KiB (float32 norms {normBytes >> 10} KiB)");
        // Stated margin: the float32 norms, plus one 4 KiB page at each end of every copied tensor (whole pages are
        // released; the partial pages at either end stay mapped).
        long margin = normBytes + 3L * config.NumLayers * 2 * 4096;
        Assert.True(mappedResident + copied <= checkpointBytes + margin,
            $"weights resident {(mappedResident + copied) >> 10} KiB > checkpoint {checkpointBytes >> 10} KiB + margin {margin >> 10} KiB");
        // Everything but the embedding (read a row at a time) was read in place, so it is resident from the map.
        long embeddingBytes = weights.Embedding.NumberOfElements * 2;
        Assert.True(mappedResident >= weights.MappedBytes - embeddingBytes - margin,
            $"only {mappedResident >> 10} KiB resident from the map, though {(weights.MappedBytes - embeddingBytes) >> 10} KiB of mapped weights were read");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Loading_a_bf16_model_never_stops_the_background_population(bool sortedLikeHuggingFace)
    {
        // The load copies the float32 norms (and, sorted, q/k/v). A stop would leave the first forward pass to fault
        // the checkpoint in; a population started after the load shows whether the load asked for one.
        string dir = Model(sortedLikeHuggingFace);
        using var files = ModelWeights.Open(dir); // the weights own it; a second Dispose does nothing
        using var weights = LlamaWeights.Load(files, ModelConfig.Load(dir), torch.float32);
        files.StartPopulating();
        Assert.True(await files.Populated.WaitAsync(TimeSpan.FromSeconds(60)), "the load stopped the population (or the kernel lacks MADV_POPULATE_READ)");
    }

    [Fact]
    public async Task Both_layouts_generate_the_same_ids()
    {
        var prompt = Enumerable.Range(3, 40).ToList();
        var ours = await Greedy(Model(sortedLikeHuggingFace: false), "auto", prompt);
        var sorted = await Greedy(Model(sortedLikeHuggingFace: true), "auto", prompt);
        Assert.Equal(ours, sorted);
        Assert.Equal(16, ours.Count);
        output.WriteLine("greedy ids: " + string.Join(",", ours.Select(i => i.ToString(CultureInfo.InvariantCulture))));
    }

    private static async Task<List<int>> Greedy(string dir, string weightDtype, IReadOnlyList<int> prompt)
    {
        using var engine = LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 64, Threads = 2, DefaultSeed = 1, WeightDtype = weightDtype });
        var tokens = new List<int>();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 16, Temperature = 0, IgnoreEos = true })))
            tokens.AddRange(chunk.TokenIds);
        return tokens;
    }
}
