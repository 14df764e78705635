// Creates a random-weight model in exactly the HuggingFace layout (config.json,
// safetensors, tokenizer files), so tests, benchmarks and the demo run without a
// model hub. Deterministic: every tensor has its own RNG stream seeded from
// (seed, tensor name), so the same seed gives the same bytes.
//
// Scaling: inputs of every projection are RMS-normalised (RMS ≈ 1), so weights of
// std 1/sqrt(fan_in) keep activations O(1); q and k then have entries of std ≈ 1
// and scores q·k/sqrt(d) have std ≈ 1 — attention is neither uniform nor one-hot.
// Norm weights are 1 ± 0.1 so a missing norm shows in the logits.
using System.Text.Json;
using Platform.Core.Hashing;
using Platform.Core.Safetensors;

namespace Platform.Core.Models;

public sealed record RandomModelOptions
{
    public string Preset { get; init; } = "tiny";
    public ulong Seed { get; init; } = 1;
    /// <summary>"llama", "qwen2" or "mistral".</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>F32, F16 or BF16.</summary>
    public SafetensorsDtype Dtype { get; init; } = SafetensorsDtype.F32;
    public int Shards { get; init; } = 1;
    public RopeScaling RopeScaling { get; init; } = RopeScaling.NoScaling;
    public bool? TieWordEmbeddings { get; init; }
    public int? MaxPositionEmbeddings { get; init; }
    /// <summary>Sliding-window attention over this many keys (mistral: every layer; qwen2: from <see cref="SlidingWindowFromLayer"/> on).</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>qwen2's max_window_layers: the first layer with the sliding window.</summary>
    public int SlidingWindowFromLayer { get; init; }
    /// <summary>
    /// Decoder layers instead of the preset's (its other shapes kept): a test that needs one layer's behaviour at a long
    /// context, e.g. the small preset's attention at 32K, then pays for one layer instead of all.
    /// </summary>
    public int? Layers { get; init; }
}

public static class RandomModelGenerator
{
    public static readonly IReadOnlyList<string> Presets = ["tiny", "small", "medium"];

    /// <summary>The architecture of a preset (vocabulary and special token ids are filled in by <see cref="Create"/>).</summary>
    public static ModelConfig PresetConfig(string preset, string modelType = "llama") => preset switch
    {
        "tiny" => Shape(modelType, hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 512, maxPos: 4096),
        "small" => Shape(modelType, hidden: 512, intermediate: 1408, layers: 4, heads: 8, kvHeads: 2, vocab: 4096, maxPos: 32768),
        // TinyLlama-1.1B's shape.
        "medium" => Shape(modelType, hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kvHeads: 4, vocab: 32000, maxPos: 32768),
        _ => throw new ArgumentException($"unknown preset '{preset}'; choose one of: {string.Join(", ", Presets)}"),
    };

    private static ModelConfig Shape(string modelType, int hidden, int intermediate, int layers, int heads, int kvHeads, int vocab, int maxPos)
    {
        if (!ModelConfig.SupportedModelTypes.Contains(modelType))
            throw new ArgumentException($"unknown model type '{modelType}'; choose one of: {string.Join(", ", ModelConfig.SupportedModelTypes)}");
        return new ModelConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            IntermediateSize = intermediate,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = hidden / heads,
            VocabSize = vocab,
            MaxPositionEmbeddings = maxPos,
            RmsNormEps = 1e-5,
            RopeTheta = modelType == "qwen2" ? 1000000.0 : 10000.0,
            AttentionBias = modelType == "qwen2",
        };
    }

    /// <summary>Writes config.json, the safetensors weights and the tokenizer files into <paramref name="outDir"/>.</summary>
    public static ModelConfig Create(string outDir, RandomModelOptions options, IProgress<double>? progress = null)
    {
        var config = PresetConfig(options.Preset, options.ModelType);
        if (options.Layers is { } layers)
        {
            if (layers <= 0) throw new ArgumentException($"a model needs at least one layer, got {layers}");
            config = config with { NumLayers = layers };
        }
        if (options.SlidingWindow is { } window)
        {
            if (window <= 0) throw new ArgumentException($"a sliding window must be positive, got {window}");
            if (options.ModelType == "llama") throw new ArgumentException("llama has no sliding window; choose mistral or qwen2");
            if (options.SlidingWindowFromLayer != 0 && options.ModelType != "qwen2")
                throw new ArgumentException("only qwen2 limits the sliding window to some layers (max_window_layers)");
            if (options.SlidingWindowFromLayer < 0 || options.SlidingWindowFromLayer >= config.NumLayers)
                throw new ArgumentException($"the first sliding-window layer must be in [0, {config.NumLayers}), got {options.SlidingWindowFromLayer}");
        }
        string family = options.ModelType == "qwen2" ? "chatml" : "llama3";
        Directory.CreateDirectory(outDir);
        var tokenizer = Tokenization.SyntheticTokenizer.Write(outDir, config.VocabSize, family);
        config = config with
        {
            RopeScaling = options.RopeScaling,
            TieWordEmbeddings = options.TieWordEmbeddings ?? options.Preset == "tiny",
            MaxPositionEmbeddings = options.MaxPositionEmbeddings ?? config.MaxPositionEmbeddings,
            SlidingWindow = options.SlidingWindow,
            SlidingWindowFromLayer = options.SlidingWindow is null ? 0 : options.SlidingWindowFromLayer,
            BosTokenId = tokenizer.BosTokenId,
            EosTokenIds = tokenizer.StopTokenIds.Count > 0 ? tokenizer.StopTokenIds : [tokenizer.EosTokenId],
            TorchDtype = options.Dtype switch
            {
                SafetensorsDtype.F16 => "float16",
                SafetensorsDtype.BF16 => "bfloat16",
                _ => "float32",
            },
        };
        File.WriteAllText(Path.Combine(outDir, "config.json"), config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        WriteWeights(outDir, config, options, progress);
        return config;
    }

    /// <summary>Every tensor of a Llama-family checkpoint with its shape, in HuggingFace naming.</summary>
    public static IEnumerable<(string Name, long[] Shape)> TensorShapes(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim, inter = c.IntermediateSize;
        yield return ("model.embed_tokens.weight", [c.VocabSize, h]);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            yield return (p + "input_layernorm.weight", [h]);
            yield return (p + "self_attn.q_proj.weight", [q, h]);
            yield return (p + "self_attn.k_proj.weight", [kv, h]);
            yield return (p + "self_attn.v_proj.weight", [kv, h]);
            if (c.AttentionBias)
            {
                yield return (p + "self_attn.q_proj.bias", [q]);
                yield return (p + "self_attn.k_proj.bias", [kv]);
                yield return (p + "self_attn.v_proj.bias", [kv]);
            }
            yield return (p + "self_attn.o_proj.weight", [h, q]);
            yield return (p + "post_attention_layernorm.weight", [h]);
            yield return (p + "mlp.gate_proj.weight", [inter, h]);
            yield return (p + "mlp.up_proj.weight", [inter, h]);
            yield return (p + "mlp.down_proj.weight", [h, inter]);
        }
        yield return ("model.norm.weight", [h]);
        if (!c.TieWordEmbeddings) yield return ("lm_head.weight", [c.VocabSize, h]);
    }

    private static void WriteWeights(string outDir, ModelConfig config, RandomModelOptions options, IProgress<double>? progress)
    {
        var tensors = TensorShapes(config).ToList();
        int shards = Math.Clamp(options.Shards, 1, tensors.Count);
        long total = tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)) * SafetensorsFile.DtypeSize(options.Dtype);
        long perShard = total / shards + 1;
        var writers = new List<SafetensorsWriter> { new() };
        long inShard = 0, done = 0;
        foreach (var (name, shape) in tensors)
        {
            long bytes = shape.Aggregate(1L, (a, b) => a * b) * SafetensorsFile.DtypeSize(options.Dtype);
            if (inShard > 0 && inShard + bytes > perShard && writers.Count < shards)
            {
                writers.Add(new SafetensorsWriter());
                inShard = 0;
            }
            inShard += bytes;
            writers[^1].Add(name, options.Dtype, shape, () =>
            {
                var data = Encode(Generate(name, shape, config, options.Seed), options.Dtype);
                done += data.Length;
                progress?.Report((double)done / total);
                return data;
            });
        }
        foreach (var w in writers) w.AddMetadata("format", "pt");
        if (writers.Count == 1)
        {
            writers[0].Write(Path.Combine(outDir, "model.safetensors"));
            return;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < writers.Count; i++)
        {
            string file = $"model-{i + 1:D5}-of-{writers.Count:D5}.safetensors";
            writers[i].Write(Path.Combine(outDir, file));
        }
        // Recompute the assignment the same way for the index.
        int shard = 0; inShard = 0;
        foreach (var (name, shape) in tensors)
        {
            long bytes = shape.Aggregate(1L, (a, b) => a * b) * SafetensorsFile.DtypeSize(options.Dtype);
            if (inShard > 0 && inShard + bytes > perShard && shard < writers.Count - 1) { shard++; inShard = 0; }
            inShard += bytes;
            weightMap[name] = $"model-{shard + 1:D5}-of-{writers.Count:D5}.safetensors";
        }
        var index = new { metadata = new { total_size = total }, weight_map = weightMap };
        File.WriteAllText(Path.Combine(outDir, "model.safetensors.index.json"),
            JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
    }

    private static float[] Generate(string name, long[] shape, ModelConfig c, ulong seed)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var values = new float[count];
        var rng = new SplitMix64(seed ^ StableHash(name));
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            for (long i = 0; i < count; i++) values[i] = 1f + 0.1f * Symmetric(rng.Next());
            return values;
        }
        double std = name switch
        {
            _ when name.EndsWith(".bias", StringComparison.Ordinal) => 0.1,
            // A tied embedding is also the output head: scale it like one so logits have std ≈ 1.
            "model.embed_tokens.weight" => c.TieWordEmbeddings ? 1.0 / Math.Sqrt(c.HiddenSize) : 1.0,
            _ when name.Contains("down_proj", StringComparison.Ordinal) => 1.0 / Math.Sqrt(c.IntermediateSize),
            _ when name.Contains("o_proj", StringComparison.Ordinal) => 1.0 / Math.Sqrt((double)c.NumHeads * c.HeadDim),
            _ => 1.0 / Math.Sqrt(c.HiddenSize),
        };
        // Uniform on [-a, a] has std a/sqrt(3).
        float a = (float)(std * Math.Sqrt(3.0));
        for (long i = 0; i < count; i++) values[i] = a * Symmetric(rng.Next());
        return values;
    }

    private static byte[] Encode(float[] values, SafetensorsDtype dtype)
    {
        switch (dtype)
        {
            case SafetensorsDtype.F32:
            {
                var bytes = new byte[values.Length * 4];
                Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
                return bytes;
            }
            case SafetensorsDtype.F16:
            {
                var bytes = new byte[values.Length * 2];
                var span = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bytes.AsSpan());
                for (int i = 0; i < values.Length; i++) span[i] = (Half)values[i];
                return bytes;
            }
            case SafetensorsDtype.BF16:
            {
                var bytes = new byte[values.Length * 2];
                var span = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                for (int i = 0; i < values.Length; i++) span[i] = DtypeConversions.FloatToBFloat16(values[i]);
                return bytes;
            }
            default:
                throw new ArgumentException($"random models are written as F32, F16 or BF16, not {dtype}");
        }
    }

    private static ulong StableHash(string s) => System.IO.Hashing.XxHash3.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(s));

    /// <summary>Uniform on [-1, 1) from the top 24 bits of one SplitMix64 output.</summary>
    private static float Symmetric(ulong bits) => (float)((bits >> 40) * (1.0 / (1UL << 24)) * 2.0 - 1.0);
}
