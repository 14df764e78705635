// The device-generic forward pass on libtorch's `meta` device, where tensors
// have shapes and dtypes but no data: a step there proves the path never reads
// host memory and never mixes in a cpu tensor, without a GPU. Weights, the paged
// KV store and every tensor a step makes (everything its dispose scope holds)
// must be on meta, for each model variant: llama, qwen2 (q/k/v biases), mistral
// (sliding window in every layer), qwen2 sliding from layer 1 (two windows in one
// step), and each RoPE scaling; in a prefill, a chunked prefill (the second chunk
// attends to the first's KV), a batched decode over out-of-order blocks and a
// step mixing decodes with a prefill chunk. The counter-checks show the guard
// bites: a cpu KV store under a meta model fails, and so does a host pointer
// into a meta pool. Nothing on the path is data-dependent (no item, nonzero or
// masked_select), so no op had to be left off meta.
using Platform.Core.Models;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

public sealed class MetaDeviceTests(ITestOutputHelper output)
{
    private static readonly Device Meta = new(DeviceType.META);
    /// <summary>A step makes dozens of tensors per layer; fewer in its scope would mean the scope does not see them.</summary>
    private const int c_minimumTensors = 20;

    public static TheoryData<string, string, int?, int> Variants => new()
    {
        { "llama", "none", null, 0 }, { "qwen2", "none", null, 0 }, { "mistral", "none", 8, 0 }, { "qwen2", "none", 8, 1 },
        { "llama", "linear", null, 0 }, { "llama", "dynamic", null, 0 }, { "llama", "llama3", null, 0 }, { "llama", "yarn", null, 0 },
        { "qwen2", "yarn", null, 0 },
    };

    internal static string ModelDir(string modelType, string rope, int? window, int fromLayer) =>
        TestModels.Get(window is null
            ? TestModels.Tiny(modelType, NumericsTests.Rope(rope))
            : TestModels.TinySliding(modelType, window, fromLayer));

    [Theory]
    [MemberData(nameof(Variants))]
    public void Prefill_chunked_prefill_and_batched_decode_run_with_every_tensor_on_meta(string modelType, string rope, int? window, int fromLayer)
    {
        using var model = LlamaModel.Load(ModelDir(modelType, rope, window, fromLayer), torch.float32, device: Meta);
        var c = model.Config;
        Assert.Equal(DeviceType.META, model.Device.type);
        Assert.True(model.RunsGenericPath);
        using var kv = new PagedKvStore(c.NumLayers, 16, 16, c.NumKvHeads, c.HeadDim, torch.float32, model.Device);
        var rng = new Random(5);
        var a = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
        var b = Enumerable.Range(0, 40).Select(_ => rng.Next(0, 500)).ToList();
        int[] blocksA = [5, 2, 7], blocksB = [0, 9, 3];

        var prefill = new ForwardBatch();
        prefill.AddSequence(a, 0, 30, blocksA, 16);
        prefill.LogitRows.AddRange(Enumerable.Range(0, 30));
        RunOnMeta(model, kv, prefill, "prefill");

        var firstChunk = new ForwardBatch();
        firstChunk.AddSequence(b, 0, 20, blocksB, 16);
        RunOnMeta(model, kv, firstChunk, "chunked prefill, first chunk (no logits)");
        var secondChunk = new ForwardBatch();
        secondChunk.AddSequence(b, 20, 15, blocksB, 16);
        secondChunk.LogitRows.Add(14);
        RunOnMeta(model, kv, secondChunk, "chunked prefill, second chunk");

        var decode = new ForwardBatch();
        decode.AddSequence(a, 30, 1, blocksA, 16);
        decode.AddSequence(b, 35, 1, blocksB, 16);
        decode.LogitRows.AddRange([0, 1]);
        RunOnMeta(model, kv, decode, "batched decode");

        var mixed = new ForwardBatch();
        mixed.AddSequence(a, 31, 1, blocksA, 16);
        var c2 = Enumerable.Range(0, 12).Select(_ => rng.Next(0, 500)).ToList();
        mixed.AddSequence(c2, 0, 12, [11], 16);
        mixed.AddSequence(b, 36, 1, blocksB, 16);
        mixed.LogitRows.AddRange([0, 12, 13]);
        RunOnMeta(model, kv, mixed, "decodes mixed with a prefill chunk");
    }

    private void RunOnMeta(LlamaModel model, PagedKvStore kv, ForwardBatch batch, string what)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var logits = model.Forward(batch, kv);
        Assert.Equal(DeviceType.META, logits.device_type);
        Assert.Equal([batch.LogitRows.Count, model.Config.VocabSize], logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        var tensors = scope.DisposablesView.OfType<Tensor>().ToList();
        Assert.True(tensors.Count > c_minimumTensors, $"{what}: the step's scope holds only {tensors.Count} tensors; the check would be vacuous");
        var offMeta = tensors.Where(t => t.device_type != DeviceType.META)
            .Select(t => $"{t.dtype}[{string.Join(",", t.shape)}] on {t.device_type}").ToList();
        Assert.True(offMeta.Count == 0, $"{what}: {offMeta.Count} of {tensors.Count} tensors are not on meta: {string.Join("; ", offMeta.Take(10))}");
        output.WriteLine($"{what}: {tensors.Count} tensors, all on meta");
    }

    [Fact]
    public void A_cpu_kv_store_under_a_meta_model_fails_loudly()
    {
        using var model = LlamaModel.Load(ModelDir("llama", "none", null, 0), torch.float32, device: Meta);
        var c = model.Config;
        using var cpuKv = new PagedKvStore(c.NumLayers, 4, 16, c.NumKvHeads, c.HeadDim, torch.float32);
        var batch = new ForwardBatch();
        batch.AddSequence([1, 2, 3, 4], 0, 4, [0], 16);
        batch.LogitRows.Add(3);
        using var scope = torch.NewDisposeScope();
        var error = Assert.ThrowsAny<Exception>(() => model.Forward(batch, cpuKv));
        output.WriteLine($"cpu pool under a meta model: {error.GetType().Name}: {error.Message.Split('\n')[0]}");
    }

    [Fact]
    public void Host_pointers_into_a_meta_pool_or_tensor_are_refused()
    {
        using var kv = new PagedKvStore(2, 4, 16, 2, 8, torch.float32, Meta);
        Assert.Equal(DeviceType.META, kv.Device.type);
        var error = Assert.Throws<InvalidOperationException>(() => kv.Pointers(0));
        Assert.Contains("--device cpu", error.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => kv.CopyBlockOut(0, new byte[kv.BytesPerBlock]));
    }
}
