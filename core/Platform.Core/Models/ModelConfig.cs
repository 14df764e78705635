// The parts of a HuggingFace config.json the engine needs, for the Llama family
// (llama, mistral, qwen2). Parsing is strict where a wrong guess would silently
// produce garbage (shapes, architecture) and lenient where HF itself is (optional
// fields with documented defaults). Every error names config.json and the field.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Platform.Core.Models;

public sealed record ModelConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2"];

    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling RopeScaling { get; init; } = RopeScaling.NoScaling;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Biases on q/k/v projections (always for qwen2; llama's <c>attention_bias</c>).</summary>
    public bool AttentionBias { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>The dtype the weights were saved in (<c>torch_dtype</c>), e.g. "bfloat16".</summary>
    public string? TorchDtype { get; init; }
    /// <summary>
    /// Keys a query sees in the layers with sliding-window attention, itself included (mistral's
    /// <c>sliding_window</c>; qwen2's when <c>use_sliding_window</c> is true); null: every layer attends fully.
    /// </summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Layers from this index on use <see cref="SlidingWindow"/> (qwen2's <c>max_window_layers</c>; 0 for mistral).</summary>
    public int SlidingWindowFromLayer { get; init; }

    public int QueriesPerKvHead => NumHeads / NumKvHeads;

    /// <summary>The keys a query of layer <paramref name="layer"/> sees (see <see cref="AttentionWindow"/> for the exact boundary).</summary>
    public AttentionWindow WindowOf(int layer) =>
        SlidingWindow is { } w && layer >= SlidingWindowFromLayer ? AttentionWindow.Sliding(w) : AttentionWindow.Full;

    /// <summary>True when some layer uses a sliding window.</summary>
    public bool HasSlidingWindow => SlidingWindow is not null && SlidingWindowFromLayer < NumLayers;

    public static ModelConfig Load(string modelDirectory)
    {
        string path = Path.Combine(modelDirectory, "config.json");
        if (!File.Exists(path))
            throw new ModelLoadException($"{path} is missing: a model directory needs a HuggingFace config.json next to its safetensors files.");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new ModelLoadException($"{path}: expected a JSON object at the top level.");
        }
        catch (JsonException e)
        {
            throw new ModelLoadException($"{path} is not valid JSON ({e.Message}); re-download or regenerate the file.", e);
        }
        var config = Parse(root, path);
        // generation_config.json may carry a more complete eos list (Llama-3 lists eot_id there).
        string genPath = Path.Combine(modelDirectory, "generation_config.json");
        if (File.Exists(genPath))
        {
            try
            {
                if (JsonNode.Parse(File.ReadAllText(genPath)) is JsonObject gen && ReadIds(gen["eos_token_id"], genPath, "eos_token_id") is { Count: > 0 } eos)
                    config = config with { EosTokenIds = eos.Union(config.EosTokenIds).ToArray() };
            }
            catch (JsonException e)
            {
                throw new ModelLoadException($"{genPath} is not valid JSON ({e.Message}); fix or delete it.", e);
            }
        }
        return config;
    }

    public static ModelConfig Parse(JsonObject root, string source = "config.json")
    {
        string modelType = ReadString(root, "model_type", source)?.ToLowerInvariant()
            ?? throw new ModelLoadException($"{source}: field 'model_type' is missing; supported: {string.Join(", ", SupportedModelTypes)}.");
        if (!SupportedModelTypes.Contains(modelType))
            throw new ModelLoadException($"{source}: model_type '{modelType}' is not supported; supported Llama-family types: {string.Join(", ", SupportedModelTypes)}.");

        int hidden = RequireInt(root, "hidden_size", source);
        int heads = RequireInt(root, "num_attention_heads", source);
        int kvHeads = ReadInt(root, "num_key_value_heads", source) ?? heads;
        int headDim = ReadInt(root, "head_dim", source) ?? (heads > 0 ? hidden / heads : 0);
        var config = new ModelConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            IntermediateSize = RequireInt(root, "intermediate_size", source),
            NumLayers = RequireInt(root, "num_hidden_layers", source),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = RequireInt(root, "vocab_size", source),
            MaxPositionEmbeddings = ReadInt(root, "max_position_embeddings", source) ?? 2048,
            RmsNormEps = ReadDouble(root, "rms_norm_eps", source) ?? 1e-6,
            RopeTheta = ReadDouble(root, "rope_theta", source) ?? 10000.0,
            RopeScaling = ParseRopeScaling(root["rope_scaling"], source),
            TieWordEmbeddings = ReadBool(root, "tie_word_embeddings", source) ?? false,
            AttentionBias = modelType == "qwen2" || (ReadBool(root, "attention_bias", source) ?? false),
            BosTokenId = ReadIds(root["bos_token_id"], source, "bos_token_id") is { Count: > 0 } bos ? bos[0] : null,
            EosTokenIds = ReadIds(root["eos_token_id"], source, "eos_token_id"),
            TorchDtype = ReadString(root, "torch_dtype", source) ?? ReadString(root, "dtype", source),
        };
        var (window, fromLayer) = ParseSlidingWindow(root, modelType, config.NumLayers, source);
        config = config with { SlidingWindow = window, SlidingWindowFromLayer = fromLayer };
        config.Validate(source);
        return config;
    }

    /// <summary>
    /// Hugging Face's rules for which layers use a sliding window. mistral (MistralConfig): every layer, with
    /// <c>sliding_window</c>, which defaults to 4096 when the field is absent and is off when it is null.
    /// qwen2 (Qwen2Config): only when <c>use_sliding_window</c> is true (default false), with <c>sliding_window</c>
    /// (default 4096, null = off), for the layers whose <c>layer_types</c> entry is "sliding_attention"; without
    /// <c>layer_types</c>, the layers with index ≥ <c>max_window_layers</c> (default 28). llama has no sliding window.
    /// </summary>
    private static (int? Window, int FromLayer) ParseSlidingWindow(JsonObject root, string modelType, int layers, string source)
    {
        const int HfDefaultWindow = 4096;
        int? ReadWindow()
        {
            if (!root.ContainsKey("sliding_window")) return HfDefaultWindow;
            int? window = ReadInt(root, "sliding_window", source);
            if (window is <= 0)
                throw new ModelLoadException($"{source}: 'sliding_window' must be a positive number of tokens or null (no sliding window), got {window}.");
            return window;
        }
        switch (modelType)
        {
            case "mistral":
                return ReadWindow() is { } mistralWindow ? (mistralWindow, 0) : (null, 0);
            case "qwen2":
            {
                if (ReadBool(root, "use_sliding_window", source) != true || ReadWindow() is not { } window) return (null, 0);
                int fromLayer = root["layer_types"] is JsonNode types
                    ? FirstSlidingLayer(types, layers, source)
                    : ReadInt(root, "max_window_layers", source) ?? 28;
                if (fromLayer < 0)
                    throw new ModelLoadException($"{source}: 'max_window_layers' must not be negative, got {fromLayer}.");
                return fromLayer >= layers ? (null, 0) : (window, fromLayer);
            }
            default:
                return (null, 0);
        }
    }

    /// <summary>
    /// The first "sliding_attention" entry of <c>layer_types</c>, which must be full attention below it and sliding from
    /// it on (the pattern Qwen2Config derives from max_window_layers); returns <paramref name="layers"/> when none slides.
    /// </summary>
    private static int FirstSlidingLayer(JsonNode node, int layers, string source)
    {
        if (node is not JsonArray types || types.Count != layers)
            throw new ModelLoadException($"{source}: 'layer_types' must be a list of {layers} entries (one per layer), \"full_attention\" or \"sliding_attention\".");
        int first = layers;
        for (int i = 0; i < layers; i++)
        {
            string? type = types[i] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
            bool sliding = type switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                _ => throw new ModelLoadException($"{source}: 'layer_types'[{i}] is {types[i]?.ToJsonString() ?? "null"}; expected \"full_attention\" or \"sliding_attention\"."),
            };
            if (sliding && first == layers) first = i;
            if (!sliding && first < layers)
                throw new ModelLoadException($"{source}: 'layer_types' has full attention at layer {i} after sliding attention at layer {first}; " +
                    "only full-attention layers followed by sliding-window layers (as max_window_layers gives) are supported.");
        }
        return first;
    }

    private void Validate(string source)
    {
        void Positive(int value, string field)
        {
            if (value <= 0) throw new ModelLoadException($"{source}: '{field}' must be positive, got {value}.");
        }
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumLayers, "num_hidden_layers");
        Positive(NumHeads, "num_attention_heads");
        Positive(NumKvHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        Positive(VocabSize, "vocab_size");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (NumHeads % NumKvHeads != 0)
            throw new ModelLoadException($"{source}: num_attention_heads ({NumHeads}) must be a multiple of num_key_value_heads ({NumKvHeads}) for grouped-query attention.");
        if (HeadDim % 2 != 0)
            throw new ModelLoadException($"{source}: head_dim ({HeadDim}) must be even for rotary embeddings.");
        if (SlidingWindow is <= 0)
            throw new ModelLoadException($"{source}: 'sliding_window' must be positive, got {SlidingWindow}.");
        if (SlidingWindow is not null && ModelType == "llama")
            throw new ModelLoadException($"{source}: a llama model has no sliding window; use model_type mistral or qwen2 for one.");
        if (SlidingWindowFromLayer != 0 && ModelType != "qwen2")
            throw new ModelLoadException($"{source}: only qwen2 limits the sliding window to some layers (max_window_layers).");
    }

    /// <summary>JSON in HuggingFace's shape, used by the random-model generator.</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType switch
            {
                "qwen2" => "Qwen2ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            }),
            ["model_type"] = ModelType,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumLayers,
            ["num_attention_heads"] = NumHeads,
            ["num_key_value_heads"] = NumKvHeads,
            ["head_dim"] = HeadDim,
            ["vocab_size"] = VocabSize,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["hidden_act"] = "silu",
            ["torch_dtype"] = TorchDtype ?? "float32",
        };
        if (ModelType != "qwen2") o["attention_bias"] = AttentionBias;
        if (ModelType == "mistral") o["sliding_window"] = SlidingWindow;   // null written out: absent would mean HF's 4096
        if (ModelType == "qwen2")
        {
            o["use_sliding_window"] = SlidingWindow is not null;
            o["sliding_window"] = SlidingWindow;
            o["max_window_layers"] = SlidingWindow is null ? NumLayers : SlidingWindowFromLayer;
        }
        if (BosTokenId is { } bos) o["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) o["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) o["eos_token_id"] = new JsonArray(EosTokenIds.Select(e => (JsonNode)e).ToArray());
        if (RopeScaling.Type != RopeScalingType.None)
        {
            var s = new JsonObject { ["rope_type"] = RopeScaling.Type.ToString().ToLowerInvariant(), ["factor"] = RopeScaling.Factor };
            if (RopeScaling.OriginalMaxPositionEmbeddings is { } orig) s["original_max_position_embeddings"] = orig;
            if (RopeScaling.Type == RopeScalingType.Llama3)
            {
                s["low_freq_factor"] = RopeScaling.LowFreqFactor;
                s["high_freq_factor"] = RopeScaling.HighFreqFactor;
            }
            if (RopeScaling.Type == RopeScalingType.Yarn)
            {
                s["beta_fast"] = RopeScaling.BetaFast;
                s["beta_slow"] = RopeScaling.BetaSlow;
                if (RopeScaling.AttentionFactor is { } af) s["attention_factor"] = af;
            }
            o["rope_scaling"] = s;
        }
        return o;
    }

    private static RopeScaling ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null) return RopeScaling.NoScaling;
        if (node is not JsonObject o)
            throw new ModelLoadException($"{source}: 'rope_scaling' must be an object or null.");
        string? type = (ReadString(o, "rope_type", source) ?? ReadString(o, "type", source))?.ToLowerInvariant();
        var kind = type switch
        {
            null or "default" => RopeScalingType.None,
            "linear" => RopeScalingType.Linear,
            "dynamic" => RopeScalingType.Dynamic,
            "llama3" => RopeScalingType.Llama3,
            "yarn" => RopeScalingType.Yarn,
            _ => throw new ModelLoadException($"{source}: rope_scaling type '{type}' is not supported; supported: linear, dynamic, llama3, yarn."),
        };
        double factor = ReadDouble(o, "factor", source) ?? 1.0;
        if (kind != RopeScalingType.None && factor < 1.0)
            throw new ModelLoadException($"{source}: rope_scaling.factor must be >= 1, got {factor}.");
        return new RopeScaling(
            kind,
            factor,
            ReadDouble(o, "low_freq_factor", source) ?? 1.0,
            ReadDouble(o, "high_freq_factor", source) ?? 4.0,
            ReadInt(o, "original_max_position_embeddings", source),
            ReadDouble(o, "beta_fast", source) ?? 32.0,
            ReadDouble(o, "beta_slow", source) ?? 1.0,
            ReadDouble(o, "attention_factor", source),
            ReadDouble(o, "mscale", source),
            ReadDouble(o, "mscale_all_dim", source));
    }

    private static int RequireInt(JsonObject o, string field, string source) =>
        ReadInt(o, field, source) ?? throw new ModelLoadException($"{source}: required field '{field}' is missing.");

    private static int? ReadInt(JsonObject o, string field, string source)
    {
        if (o[field] is not JsonValue v) return null;
        if (v.TryGetValue<int>(out int i)) return i;
        if (v.TryGetValue<long>(out long l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
        if (v.TryGetValue<double>(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
        throw new ModelLoadException($"{source}: field '{field}' must be an integer, got {v.ToJsonString()}.");
    }

    private static double? ReadDouble(JsonObject o, string field, string source)
    {
        if (o[field] is not JsonValue v) return null;
        if (v.TryGetValue<double>(out double d)) return d;
        throw new ModelLoadException($"{source}: field '{field}' must be a number, got {v.ToJsonString()}.");
    }

    private static bool? ReadBool(JsonObject o, string field, string source)
    {
        if (o[field] is not JsonValue v) return null;
        if (v.TryGetValue<bool>(out bool b)) return b;
        throw new ModelLoadException($"{source}: field '{field}' must be true or false, got {v.ToJsonString()}.");
    }

    private static string? ReadString(JsonObject o, string field, string source)
    {
        if (o[field] is not JsonValue v) return null;
        if (v.TryGetValue<string>(out string? s)) return s;
        throw new ModelLoadException($"{source}: field '{field}' must be a string, got {v.ToJsonString()}.");
    }

    private static List<int> ReadIds(JsonNode? node, string source, string field)
    {
        var ids = new List<int>();
        switch (node)
        {
            case null: break;
            case JsonValue v when v.TryGetValue<int>(out int id): ids.Add(id); break;
            case JsonArray a:
                foreach (var item in a)
                {
                    if (item is JsonValue iv && iv.TryGetValue<int>(out int i)) ids.Add(i);
                    else throw new ModelLoadException($"{source}: '{field}' must hold integers, got {item?.ToJsonString()}.");
                }
                break;
            default: throw new ModelLoadException($"{source}: '{field}' must be an integer or a list of integers.");
        }
        return ids;
    }
}
