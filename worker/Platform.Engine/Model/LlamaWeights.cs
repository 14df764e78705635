// Loads a Llama-family checkpoint into TorchSharp tensors: the projection and
// embedding matrices in the weight dtype (WeightDtype: by default the
// checkpoint's own width, widened in registers by the GEMV), norms and biases
// in the compute dtype.
// Every tensor's name and shape is checked against config.json before any data
// is copied, so a mismatched checkpoint is a ModelLoadException naming the file
// and tensor, not a shape error deep inside libtorch. q/k/v and gate/up are
// fused into one matrix each: one pass over the input per layer instead of 3+2.
// With --quantization int8 each decoder-layer projection is quantized right after
// it is loaded and fused (QuantizationQ8, on every core) and its wide copy freed
// at once; a matrix whose input width is not a multiple of 32 stays in the weight
// dtype. The embedding and the LM head stay in the weight dtype (docs/engine.md).
using Platform.Core;
using Platform.Core.Models;
using Platform.Core.Safetensors;
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
    /// <summary>How many projections are held as int8 (Quantization.Q8); 0 without quantization.</summary>
    public int Int8Projections { get; init; }

    /// <summary>The embedding rows of <paramref name="ids"/> in <paramref name="compute"/> (a narrow embedding widened; exact).</summary>
    public Tensor Embed(Tensor ids, ScalarType compute)
    {
        var rows = Embedding.index_select(0, ids);
        return rows.dtype == compute ? rows : rows.to_type(compute);
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "A failed load disposes every finished layer (catch below); only the tensors of a layer whose initializer threw part-way are left to the GC, and a failed load ends the worker (exit code 3).")]
    public static LlamaWeights Load(string modelDirectory, ModelConfig config, ScalarType dtype, IProgress<double>? progress = null, string weightDtype = WeightDtype.Auto, string quantization = Quantization.None)
    {
        bool int8 = Quantization.IsInt8(quantization, dtype);
        using var files = ModelWeights.Open(modelDirectory);
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
            ? expected.Where(e => e.Name.StartsWith("model.layers.", StringComparison.Ordinal) && e.Name.EndsWith("_proj.weight", StringComparison.Ordinal) && QuantizationQ8.Supports(e.Shape[^1]))
                .Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b))
            : 0;
        double work = totalBytes + toQuantize;
        long loaded = 0, quantized = 0, residentBytes = 0;
        int int8Projections = 0;
        Tensor LoadAs(string name, ScalarType type)
        {
            var (file, info) = files.Get(name);
            var t = ToTensor(file, info, type);
            if (type == ScalarType.Float16 && dtype == ScalarType.Float32 && !FiniteHalves(t))
                throw new ModelLoadException($"{file.Path}: tensor '{name}' holds inf or NaN as float16; the float16 kernel needs finite weights (pass weight dtype float32 to load it widened).");
            loaded += info.ElementCount;
            residentBytes += info.ElementCount * TorchDtypes.ElementSize(type);
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
                packed = QuantizationQ8.Quantize(weight);
            int8Projections++;
            quantized += count;
            residentBytes += packed.numel() - count * TorchDtypes.ElementSize(weightType);
            progress?.Report((loaded + quantized) / work);
            return Projection.FromInt8Rows(packed, inFeatures, bias);
        }
        Tensor Load(string name) => LoadAs(name, dtype);
        Tensor LoadMatrix(string name) => LoadAs(name, weightType);

        var layers = new LayerWeights[config.NumLayers];
        Tensor? embedding = null;
        try
        {
            embedding = LoadMatrix("model.embed_tokens.weight");
            for (int i = 0; i < config.NumLayers; i++)
            {
                string p = $"model.layers.{i}.";
                Tensor Cat(Func<string, Tensor> load, params string[] names)
                {
                    var parts = names.Select(load).ToArray();
                    var fused = torch.cat(parts, 0);
                    foreach (var part in parts) part.Dispose();
                    return fused;
                }
                layers[i] = new LayerWeights
                {
                    InputNorm = Load(p + "input_layernorm.weight"),
                    Qkv = Project(
                        Cat(LoadMatrix, p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"),
                        config.AttentionBias ? Cat(Load, p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias") : null),
                    O = Project(LoadMatrix(p + "self_attn.o_proj.weight"), null),
                    PostNorm = Load(p + "post_attention_layernorm.weight"),
                    GateUp = Project(Cat(LoadMatrix, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"), null),
                    Down = Project(LoadMatrix(p + "mlp.down_proj.weight"), null),
                };
            }
            var finalNorm = Load("model.norm.weight");
            var lmHead = new Projection(tied ? embedding : LoadMatrix("lm_head.weight"), null);
            return new LlamaWeights
            {
                Embedding = embedding,
                Layers = layers,
                FinalNorm = finalNorm,
                LmHead = lmHead,
                ParameterBytes = residentBytes,
                WeightType = weightType,
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

    private static unsafe Tensor ToTensor(SafetensorsFile file, TensorInfo info, ScalarType dtype)
    {
        var source = TorchDtypes.FromSafetensors(info.Dtype, $"{file.Path}: tensor '{info.Name}'");
        var raw = torch.empty(info.Shape, source);
        new ReadOnlySpan<byte>(file.GetPointer(info), checked((int)info.ByteLength)).CopyTo(raw.bytes);
        if (source == dtype) return raw;
        var converted = raw.to_type(dtype);
        raw.Dispose();
        return converted;
    }

    private static unsafe bool FiniteHalves(Tensor t) =>
        t.numel() == 0 || Platform.Engine.Kernels.Gemv.AllFinite((Half*)TensorPointers.Data(t), t.numel());

    public void Dispose()
    {
        Embedding.Dispose();
        foreach (var l in Layers) l.Dispose();
        FinalNorm.Dispose();
        if (!ReferenceEquals(LmHead.Weight, Embedding)) LmHead.Weight.Dispose();
    }
}
