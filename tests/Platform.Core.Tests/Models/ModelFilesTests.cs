// Model directory handling without TorchSharp: config.json parsing, safetensors
// round trips per dtype, sharded checkpoints, the random model generator's
// determinism, and the clear error each kind of bad file must produce.
using System.Text;
using System.Text.Json.Nodes;
using Platform.Core;
using Platform.Core.Models;
using Platform.Core.Safetensors;

namespace Platform.Core.Tests.Models;

public sealed class ModelFilesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("platform-core-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Theory]
    [InlineData(SafetensorsDtype.F32)]
    [InlineData(SafetensorsDtype.F16)]
    [InlineData(SafetensorsDtype.BF16)]
    public void Safetensors_round_trip_keeps_names_shapes_and_bytes(SafetensorsDtype dtype)
    {
        var writer = new SafetensorsWriter();
        var a = Enumerable.Range(0, 6 * SafetensorsFile.DtypeSize(dtype)).Select(i => (byte)(i * 7)).ToArray();
        var b = Enumerable.Range(0, 5 * SafetensorsFile.DtypeSize(dtype)).Select(i => (byte)(i + 100)).ToArray();
        writer.Add("a.weight", dtype, [2, 3], a);
        writer.Add("b", dtype, [5], b);
        writer.AddMetadata("format", "pt");
        string path = Path.Combine(_dir, "x.safetensors");
        writer.Write(path);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["a.weight", "b"], file.Tensors.Keys.Order());
        Assert.Equal([2L, 3L], file.Get("a.weight").Shape);
        Assert.Equal(dtype, file.Get("b").Dtype);
        Assert.Equal(a, file.GetBytes(file.Get("a.weight")).ToArray());
        Assert.Equal(b, file.GetBytes(file.Get("b")).ToArray());
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(0, (new FileInfo(path).Length - a.Length - b.Length) % 8);
    }

    [Fact]
    public void Bfloat16_conversion_rounds_to_nearest_even()
    {
        Assert.Equal(1.0f, DtypeConversions.BFloat16ToFloat(DtypeConversions.FloatToBFloat16(1.0f)));
        float justAbove = BitConverter.UInt32BitsToSingle(0x3F808001);  // rounds up past the halfway point
        Assert.Equal(0x3F81, DtypeConversions.FloatToBFloat16(justAbove));
        float halfway = BitConverter.UInt32BitsToSingle(0x3F808000);    // tie: stays on the even 0x3F80
        Assert.Equal(0x3F80, DtypeConversions.FloatToBFloat16(halfway));
        Assert.True(float.IsNaN(DtypeConversions.BFloat16ToFloat(DtypeConversions.FloatToBFloat16(float.NaN))));
    }

    [Fact]
    public void Random_models_are_deterministic_and_sharded_models_hold_the_same_tensors()
    {
        string one = Path.Combine(_dir, "one"), two = Path.Combine(_dir, "two"), sharded = Path.Combine(_dir, "sharded");
        var options = new RandomModelOptions { Preset = "tiny", Seed = 5 };
        RandomModelGenerator.Create(one, options);
        RandomModelGenerator.Create(two, options);
        RandomModelGenerator.Create(sharded, options with { Shards = 3 });
        foreach (var f in Directory.GetFiles(one).Select(Path.GetFileName))
            Assert.Equal(File.ReadAllBytes(Path.Combine(one, f!)), File.ReadAllBytes(Path.Combine(two, f!)));
        Assert.Equal(3, Directory.GetFiles(sharded, "model-*-of-00003.safetensors").Length);

        using var single = ModelWeights.Open(one);
        using var shards = ModelWeights.Open(sharded);
        Assert.Equal(single.TensorNames.Order(), shards.TensorNames.Order());
        foreach (var name in single.TensorNames)
        {
            var (f1, t1) = single.Get(name);
            var (f2, t2) = shards.Get(name);
            Assert.True(f1.GetBytes(t1).SequenceEqual(f2.GetBytes(t2)), name);
        }
        var other = Path.Combine(_dir, "other");
        RandomModelGenerator.Create(other, options with { Seed = 6 });
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(one, "model.safetensors")), File.ReadAllBytes(Path.Combine(other, "model.safetensors")));
    }

    [Fact]
    public void Config_parses_llama_qwen2_and_rope_scaling_fields()
    {
        var llama = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
             "num_key_value_heads":2,"vocab_size":100,"max_position_embeddings":131072,"rope_theta":500000.0,
             "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},
             "eos_token_id":[1,2],"bos_token_id":0,"tie_word_embeddings":true}
            """)!.AsObject());
        Assert.Equal(16, llama.HeadDim);
        Assert.Equal(2, llama.QueriesPerKvHead);
        Assert.Equal(RopeScalingType.Llama3, llama.RopeScaling.Type);
        Assert.Equal(8192, llama.RopeScaling.OriginalMaxPositionEmbeddings);
        Assert.Equal([1, 2], llama.EosTokenIds);
        Assert.False(llama.AttentionBias);
        Assert.True(llama.TieWordEmbeddings);

        var qwen = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
             "num_key_value_heads":2,"vocab_size":100,"rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}
            """)!.AsObject());
        Assert.True(qwen.AttentionBias);
        Assert.Equal(RopeScalingType.Yarn, qwen.RopeScaling.Type);
        // Round trip through the generator's writer.
        var again = ModelConfig.Parse(qwen.ToJson());
        Assert.Equal(qwen.RopeScaling, again.RopeScaling);
        Assert.Equal(qwen.AttentionBias, again.AttentionBias);
    }

    private const string Shape = """
        "hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100
        """;

    /// <summary>Parses a 4-layer config of <paramref name="modelType"/> plus <paramref name="extra"/> fields (written with ' for ").</summary>
    private static ModelConfig ParseWith(string modelType, string extra) =>
        ModelConfig.Parse(JsonNode.Parse($$"""{"model_type":"{{modelType}}",{{Shape}}{{extra.Replace('\'', '"')}}}""")!.AsObject());

    [Fact]
    public void Sliding_window_follows_hugging_faces_rules_per_architecture()
    {
        // mistral: every layer; absent means MistralConfig's default of 4096, null means none.
        var mistral = ParseWith("mistral", ",'sliding_window':4096");
        Assert.Equal(AttentionWindow.Sliding(4096), mistral.WindowOf(0));
        Assert.Equal(AttentionWindow.Sliding(4096), mistral.WindowOf(3));
        Assert.Equal(4096, ParseWith("mistral", "").SlidingWindow);
        Assert.Null(ParseWith("mistral", ",'sliding_window':null").SlidingWindow);
        Assert.Equal(AttentionWindow.Full, ParseWith("mistral", ",'sliding_window':null").WindowOf(0));

        // qwen2: only with use_sliding_window, and only from max_window_layers (or layer_types) on.
        Assert.False(ParseWith("qwen2", ",'sliding_window':32768,'max_window_layers':2").HasSlidingWindow);
        Assert.False(ParseWith("qwen2", ",'use_sliding_window':false,'sliding_window':32768,'max_window_layers':0").HasSlidingWindow);
        var qwen = ParseWith("qwen2", ",'use_sliding_window':true,'sliding_window':8,'max_window_layers':2");
        Assert.Equal([AttentionWindow.Full, AttentionWindow.Full, AttentionWindow.Sliding(8), AttentionWindow.Sliding(8)],
            Enumerable.Range(0, 4).Select(qwen.WindowOf).ToArray());
        // max_window_layers defaults to 28: on 4 layers no layer slides.
        Assert.False(ParseWith("qwen2", ",'use_sliding_window':true,'sliding_window':8").HasSlidingWindow);
        var typed = ParseWith("qwen2", ",'use_sliding_window':true,'sliding_window':8,'max_window_layers':0," +
            "'layer_types':['full_attention','full_attention','full_attention','sliding_attention']");
        Assert.Equal(3, typed.SlidingWindowFromLayer);

        // llama ignores the field, as transformers' LlamaModel does.
        Assert.False(ParseWith("llama", ",'sliding_window':8").HasSlidingWindow);

        // The generator's writer round-trips all of it.
        foreach (var config in new[] { mistral, qwen, ParseWith("mistral", ",'sliding_window':null"), ParseWith("qwen2", "") })
        {
            var again = ModelConfig.Parse(config.ToJson());
            Assert.Equal(config.SlidingWindow, again.SlidingWindow);
            Assert.Equal(config.SlidingWindowFromLayer, again.SlidingWindowFromLayer);
        }
    }

    [Fact]
    public void Attention_window_boundary_is_transformers_masking_utils()
    {
        // kv_idx > q_idx - sliding_window: a query sees itself and the window - 1 positions before it.
        var w = AttentionWindow.Sliding(8);
        Assert.Equal(0, w.FirstVisibleKey(0));
        Assert.Equal(0, w.FirstVisibleKey(7));
        Assert.Equal(1, w.FirstVisibleKey(8));
        Assert.Equal(93, w.FirstVisibleKey(100));
        Assert.Equal(0, AttentionWindow.Full.FirstVisibleKey(100));
    }

    [Theory]
    [InlineData("mistral", ",'sliding_window':0", "'sliding_window' must be a positive number")]
    [InlineData("qwen2", ",'use_sliding_window':true,'sliding_window':8,'layer_types':['full_attention']", "'layer_types' must be a list of 4 entries")]
    [InlineData("qwen2", ",'use_sliding_window':true,'sliding_window':8,'layer_types':['sliding_attention','full_attention','sliding_attention','sliding_attention']", "full attention at layer 1 after sliding attention")]
    [InlineData("qwen2", ",'use_sliding_window':true,'sliding_window':8,'layer_types':['full_attention','chunked_attention','full_attention','full_attention']", "'layer_types'[1]")]
    [InlineData("qwen2", ",'use_sliding_window':true,'sliding_window':8,'max_window_layers':-1", "'max_window_layers' must not be negative")]
    public void Bad_sliding_window_fields_are_named(string modelType, string extra, string expected)
    {
        var e = Assert.Throws<ModelLoadException>(() => ParseWith(modelType, extra));
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("""{"model_type":"gpt2","hidden_size":64}""", "model_type 'gpt2' is not supported")]
    [InlineData("""{"hidden_size":64}""", "'model_type' is missing")]
    [InlineData("""{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":10}""", "multiple of num_key_value_heads")]
    [InlineData("""{"model_type":"llama","hidden_size":"big","intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10}""", "'hidden_size' must be an integer")]
    [InlineData("""{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10,"rope_scaling":{"type":"longrope","factor":2}}""", "rope_scaling type 'longrope' is not supported")]
    [InlineData("""{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10}""", "'intermediate_size' is missing")]
    public void Bad_configs_name_the_field(string json, string expected)
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"), json);
        var e = Assert.ThrowsAny<ModelLoadException>(() => ModelConfig.Load(_dir));
        Assert.Contains(expected, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Missing_config_and_invalid_json_are_clear()
    {
        Assert.Contains("config.json is missing", Assert.Throws<ModelLoadException>(() => ModelConfig.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, "config.json"), "{ not json");
        Assert.Contains("not valid JSON", Assert.Throws<ModelLoadException>(() => ModelConfig.Load(_dir)).Message);
    }

    private string WriteOne(byte[]? data = null)
    {
        var w = new SafetensorsWriter();
        w.Add("t", SafetensorsDtype.F32, [4], data ?? new byte[16]);
        string path = Path.Combine(_dir, "model.safetensors");
        w.Write(path);
        return path;
    }

    [Fact]
    public void Safetensors_opens_through_a_symlink_as_the_hugging_face_cache_lays_files_out()
    {
        string blob = WriteOne(Enumerable.Range(0, 16).Select(i => (byte)i).ToArray());
        Directory.CreateDirectory(Path.Combine(_dir, "snapshots", "c0ffee"));
        string link = Path.Combine(_dir, "snapshots", "c0ffee", "model.safetensors");
        File.CreateSymbolicLink(link, Path.Combine("..", "..", Path.GetFileName(blob)));
        using var file = SafetensorsFile.Open(link);
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (byte)i).ToArray(), file.GetBytes(file.Get("t")).ToArray());
    }

    [Fact]
    public void Truncated_safetensors_is_reported_with_the_file()
    {
        string path = WriteOne();
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]);
        var e = Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("'t'", e.Message);
        File.WriteAllBytes(path, bytes[..4]);
        Assert.Contains("truncated", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
    }

    [Fact]
    public void A_header_that_lies_about_sizes_is_rejected()
    {
        string path = Path.Combine(_dir, "model.safetensors");
        void Write(string header, int dataBytes)
        {
            var h = Encoding.UTF8.GetBytes(header);
            using var s = File.Create(path);
            s.Write(BitConverter.GetBytes((long)h.Length));
            s.Write(h);
            s.Write(new byte[dataBytes]);
        }
        Write("""{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,16]}}""", 16);
        Assert.Contains("header lies about the size", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
        Write("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""", 24);
        Assert.Contains("overlap", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
        Write("""{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}""", 16);
        Assert.Contains("unknown or missing dtype", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
        Write("""{"w":""", 0);
        Assert.Contains("not valid JSON", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
        using (var s = File.Create(path)) { s.Write(BitConverter.GetBytes(1L << 40)); s.Write(new byte[8]); }
        Assert.Contains("does not fit", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
    }

    [Fact]
    public void Missing_weights_and_a_shard_index_that_disagrees_are_clear()
    {
        Assert.Contains("no model.safetensors", Assert.Throws<ModelLoadException>(() => ModelWeights.Open(_dir)).Message);
        WriteOne();
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), """{"weight_map":{"t":"model.safetensors","u":"model.safetensors"}}""");
        Assert.Contains("does not contain it", Assert.Throws<ModelLoadException>(() => ModelWeights.Open(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), """{"weight_map":{"t":"model-00002.safetensors"}}""");
        Assert.Contains("model-00002.safetensors is missing", Assert.Throws<ModelLoadException>(() => ModelWeights.Open(_dir)).Message);
    }
}
