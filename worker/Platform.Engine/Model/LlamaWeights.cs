// Loads a Llama-family checkpoint into TorchSharp tensors: the projection and
// embedding matrices in the weight dtype (WeightDtype: by default the
// checkpoint's own width, widened in registers by the GEMV), norms and biases
// in the compute dtype.
// Every tensor's name and shape is checked against config.json before any data
// is read, so a mismatched checkpoint is a ModelLoadException naming the file
// and tensor, not a shape error deep inside libtorch. q/k/v and gate/up are
// fused into one matrix each: one pass over the input per layer instead of 3+2.
// A tensor already in the dtype it is held in is not copied: it is a view of
// the memory-mapped safetensors file (MappedTensors), which stays mapped for
// the weights' lifetime. So is a fused matrix whose parts lie back to back in
// the file (gate/up in Hugging Face's sorted layout; q/k/v in ours); other
// fused matrices are copied once into one tensor, and a width conversion
// (e.g. --weight-dtype float32 on a bf16 checkpoint) is libtorch's multi-threaded
// copy. A warm start then costs reading the header, not a copy of the model.
// With --quantization int8 each decoder-layer projection, and an untied LM head,
// is quantized right after it is loaded and fused (QuantizationQ8, on every core)
// and its wide copy freed at once; a matrix whose input width is not a multiple
// of 32 stays in the weight dtype. The embedding (and so a tied head) stays in
// the weight dtype (docs/engine.md).
using Platform.Core;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine.Kernels;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public sealed class LayerWeights : IDisposable
{
    public required Tensor InputNorm { get; init; }
    public required Projection Qkv { get; init; }
    public required Projection O { get; init; }
    public required Tensor PostNorm { get; init; }
    public required Projection GateUp { get; init; }
    public required Projection Down { get; init; }

    public void Dispose()
    {
        InputNorm.Dispose(); Qkv.Weight.Dispose(); Qkv.Bias?.Dispose(); O.Weight.Dispose();
        PostNorm.Dispose(); GateUp.Weight.Dispose(); Down.Weight.Dispose();
    }
}

public sealed class LlamaWeights : IDisposable
{
    public required Tensor Embedding { get; init; }
    public required LayerWeights[] Layers { get; init; }
    public required Tensor FinalNorm { get; init; }
    /// <summary>The output projection (over the embedding itself when tied).</summary>
    public required Projection LmHead { get; init; }
    public required long ParameterBytes { get; init; }
    /// <summary>The dtype the projection and embedding matrices are held in (WeightDtype).</summary>
    public required ScalarType WeightType { get; init; }
    /// <summary>The open safetensors files whose mapped bytes back the tensors that were not copied.</summary>
    private ModelWeights? Files { get; init; }
    /// <summary>Bytes of weights used in place from the memory-mapped checkpoint (no copy).</summary>
    public long MappedBytes { get; init; }
    /// <summary>How many projections are held as int8 (Quantization.Q8); 0 without quantization.</summary>
    public int Int8Projections { get; init; }

    /// <summary>The embedding rows of <paramref name="ids"/> in <paramref name="compute"/> (a narrow embedding widened; exact).</summary>
    public Tensor Embed(Tensor ids, ScalarType compute)
    {
        var rows = Embedding.index_select(0, ids);
        return rows.dtype == compute ? rows : rows.to_type(compute);
    }

    public static LlamaWeights Load(string modelDirectory, ModelConfig config, ScalarType dtype, IProgress<double>? progress = null, string weightDtype = WeightDtype.Auto, string quantization = Quantization.None)
    {
        return Load(ModelWeights.Open(modelDirectory), config, dtype, progress, weightDtype, quantization);
    }

    /// <summary>Loads from checkpoint files already open (perhaps populating: see ModelWeights.StartPopulating);
    /// the weights own them from here on, and dispose them if the load fails.</summary>
    public static LlamaWeights Load(ModelWeights files, ModelConfig config, ScalarType dtype, IProgress<double>? progress = null, string weightDtype = WeightDtype.Auto, string quantization = Quantization.None)
    {
        ArgumentNullException.ThrowIfNull(files);
        try
        {
            return LoadOwned(files, config, dtype, progress, weightDtype, quantization);
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "A failed load disposes every finished layer (catch below); only the tensors of a layer whose initializer threw part-way are left to the GC, and a failed load ends the worker (exit code 3).")]
    private static unsafe LlamaWeights LoadOwned(ModelWeights files, ModelConfig config, ScalarType dtype, IProgress<double>? progress, string weightDtype, string quantization)
    {
        bool int8 = Quantization.IsInt8(quantization, dtype);
        // int8 quantizes the projections and releases their mapped bytes: nothing to gain from mapping them first.
        if (int8) files.StopPopulating();
        var (_, firstProjection) = files.Get("model.layers.0.self_attn.q_proj.weight");
        ScalarType weightType = WeightDtype.Resolve(weightDtype, firstProjection.Dtype, dtype);
        bool tied = config.TieWordEmbeddings || !files.Contains("lm_head.weight");
        var expected = RandomModelGenerator.TensorShapes(config with { TieWordEmbeddings = tied }).ToList();
        foreach (var (name, shape) in expected)
        {
            var (file, info) = files.Get(name);
            if (!info.Shape.SequenceEqual(shape))
                throw new ModelLoadException(
                    $"{file.Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", shape)}]; the weights and config.json do not belong together.");
            TorchDtypes.FromSafetensors(info.Dtype, $"{file.Path}: tensor '{name}'");
        }

        long totalBytes = expected.Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b));
        // With int8, quantizing a matrix is reported as much work as loading it.
        long toQuantize = int8
            ? expected.Where(e => (e.Name.StartsWith("model.layers.", StringComparison.Ordinal) && e.Name.EndsWith("_proj.weight", StringComparison.Ordinal)
                    || e.Name == "lm_head.weight") && QuantizationQ8.Supports(e.Shape[^1]))
                .Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b))
            : 0;
        double work = totalBytes + toQuantize;
        long loaded = 0, quantized = 0, residentBytes = 0, mappedBytes = 0;
        int int8Projections = 0;
        var mapped = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        // One tensor of `type` from the named checkpoint tensors stacked along dim 0 (one name: the tensor itself).
        Tensor LoadAs(ScalarType type, params string[] names)
        {
            var parts = names.Select(files.Get).ToArray();
            var (file, info) = parts[0];
            bool inPlace = Contiguous(parts, type);
            var t = inPlace ? MapInPlace(parts) : Copy(files, parts, type);
            if (type == ScalarType.Float16 && dtype == ScalarType.Float32 && !FiniteHalves(t))
                throw new ModelLoadException($"{file.Path}: tensor '{string.Join("', '", names)}' holds inf or NaN as float16; the float16 kernel needs finite weights (pass weight dtype float32 to load it widened).");
            long elements = parts.Sum(p => p.Info.ElementCount);
            loaded += elements;
            residentBytes += elements * TorchDtypes.ElementSize(type);
            if (inPlace)
            {
                mappedBytes += elements * TorchDtypes.ElementSize(type);
                mapped.Add(t);
            }
            progress?.Report((loaded + quantized) / work);
            return t;
        }
        Projection Project(Tensor weight, Tensor? bias)
        {
            if (!int8 || !QuantizationQ8.Supports(weight.shape[1]))
                return new Projection(weight, bias);
            long count = weight.numel();
            int inFeatures = (int)weight.shape[1];
            Tensor packed;
            using (weight)
            {
                packed = QuantizationQ8.Quantize(weight);
                if (mapped.Remove(weight))
                {
                    // The int8 copy is what stays: the checkpoint's bytes need not stay resident too.
                    long bytes = count * TorchDtypes.ElementSize(weight.dtype);
                    MappedTensors.Release(TensorPointers.Data(weight), bytes);
                    mappedBytes -= bytes;
                }
            }
            int8Projections++;
            quantized += count;
            residentBytes += packed.numel() - count * TorchDtypes.ElementSize(weightType);
            progress?.Report((loaded + quantized) / work);
            return Projection.FromInt8Rows(packed, inFeatures, bias);
        }
        Tensor Load(string name) => LoadAs(dtype, name);
        Tensor LoadMatrix(string name) => LoadAs(weightType, name);

        var layers = new LayerWeights[config.NumLayers];
        Tensor? embedding = null;
        try
        {
            embedding = LoadMatrix("model.embed_tokens.weight");
            for (int i = 0; i < config.NumLayers; i++)
            {
                string p = $"model.layers.{i}.";
                layers[i] = new LayerWeights
                {
                    InputNorm = Load(p + "input_layernorm.weight"),
                    Qkv = Project(
                        LoadAs(weightType, p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"),
                        config.AttentionBias ? LoadAs(dtype, p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias") : null),
                    O = Project(LoadMatrix(p + "self_attn.o_proj.weight"), null),
                    PostNorm = Load(p + "post_attention_layernorm.weight"),
                    GateUp = Project(LoadAs(weightType, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"), null),
                    Down = Project(LoadMatrix(p + "mlp.down_proj.weight"), null),
                };
            }
            var finalNorm = Load("model.norm.weight");
            // An untied head is quantized like the layers (llama.cpp's q8_0 files do the same); a tied one stays the
            // embedding, which index_select reads dense (docs/engine.md, "int8 weights").
            var lmHead = tied ? new Projection(embedding, null) : Project(LoadMatrix("lm_head.weight"), null);
            return new LlamaWeights
            {
                Embedding = embedding,
                Layers = layers,
                FinalNorm = finalNorm,
                LmHead = lmHead,
                ParameterBytes = residentBytes,
                WeightType = weightType,
                Files = files,
                MappedBytes = mappedBytes,
                Int8Projections = int8Projections,
            };
        }
        catch
        {
            embedding?.Dispose();
            foreach (var l in layers) l?.Dispose();
            throw;
        }
    }

    /// <summary>True when the parts can be used in place: stored in <paramref name="type"/>, in one file, back to back.</summary>
    private static bool Contiguous((SafetensorsFile File, TensorInfo Info)[] parts, ScalarType type)
    {
        for (int i = 0; i < parts.Length; i++)
        {
            var (file, info) = parts[i];
            if (TorchDtypes.FromSafetensors(info.Dtype, $"{file.Path}: tensor '{info.Name}'") != type) return false;
            if (i > 0 && (!ReferenceEquals(file, parts[0].File) || info.Begin != parts[i - 1].Info.End
                || !info.Shape.AsSpan(1).SequenceEqual(parts[0].Info.Shape.AsSpan(1))))
                return false;
        }
        return true;
    }

    /// <summary>The parts (<see cref="Contiguous"/>) as one tensor over the mapped file: no copy.</summary>
    private static unsafe Tensor MapInPlace((SafetensorsFile File, TensorInfo Info)[] parts)
    {
        var (file, first) = parts[0];
        long[] shape = [.. first.Shape];
        if (shape.Length > 0) shape[0] = parts.Sum(p => p.Info.Shape[0]);
        var type = TorchDtypes.FromSafetensors(first.Dtype, $"{file.Path}: tensor '{first.Name}'");
        return MappedTensors.Borrow(file.GetPointer(first), shape, type);
    }

    /// <summary>The parts stacked along dim 0 into one new tensor of <paramref name="type"/> (one copy, converting as it goes).</summary>
    private static unsafe Tensor Copy(ModelWeights files, (SafetensorsFile File, TensorInfo Info)[] parts, ScalarType type)
    {
        long[] shape = [.. parts[0].Info.Shape];
        if (shape.Length > 0) shape[0] = parts.Sum(p => p.Info.Shape[0]);
        var result = torch.empty(shape, type);
        long row = 0;
        foreach (var part in parts)
        {
            using var source = MapInPlace([part]);
            long rows = part.Info.Shape[0];
            using var target = result.narrow(0, row, rows);
            target.copy_(source);
            // The copy is what stays; the mapped bytes it came from need not stay resident as well.
            files.ReleasePages(part.File, part.Info);
            row += rows;
        }
        return result;
    }

    private static unsafe bool FiniteHalves(Tensor t) =>
        t.numel() == 0 || Platform.Engine.Kernels.Gemv.AllFinite((Half*)TensorPointers.Data(t), t.numel());

    public void Dispose()
    {
        Embedding.Dispose();
        foreach (var l in Layers) l.Dispose();
        FinalNorm.Dispose();
        if (!ReferenceEquals(LmHead.Weight, Embedding)) LmHead.Weight.Dispose();
        // Last: the tensors above may be views of the mapped files.
        Files?.Dispose();
    }
}
