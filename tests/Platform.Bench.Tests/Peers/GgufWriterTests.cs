// The GGUF writer and the engine-model export, read back by the tests' own GGUF reader: header,
// metadata, tensor infos, alignment of every tensor, exact f32/f16 data, q8_0 blocks that decode
// within half a step of the input, and an exported model's names, shapes, tokenizer and RoPE layout.
using System.Buffers.Binary;
using Platform.Bench.Peers;
using Platform.Core.Models;

namespace Platform.Bench.Tests.Peers;

public sealed class GgufWriterTests : IDisposable
{
    private static readonly string[] LayerTensors = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"];

    private readonly string _dir = Directory.CreateTempSubdirectory("gguf-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Header_metadata_tensor_infos_and_alignment_read_back()
    {
        var rng = new Random(5);
        float[] matrix = [.. Enumerable.Range(0, 3 * 64).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
        float[] vector = [.. Enumerable.Range(0, 7).Select(i => i * 0.25f - 1)];
        var writer = new GgufWriter();
        writer.AddString("general.architecture", "llama");
        writer.AddUInt32("llama.block_count", 22);
        writer.AddFloat32("llama.rope.freq_base", 10000f);
        writer.AddBool("tokenizer.ggml.add_bos_token", true);
        writer.AddStringArray("tokenizer.ggml.tokens", ["a", "Ġb", "<|eot_id|>"]);
        writer.AddInt32Array("tokenizer.ggml.token_type", [1, 1, 3]);
        // A 7-element f32 tensor leaves the next offset unaligned unless the writer pads.
        writer.AddTensor("v", GgmlType.F32, [7], () => GgufTensorEncoding.EncodeF32(vector));
        writer.AddTensor("m16", GgmlType.F16, [64, 3], () => GgufTensorEncoding.EncodeF16(matrix));
        writer.AddTensor("m8", GgmlType.Q8_0, [64, 3], () => GgufTensorEncoding.EncodeQ8_0(matrix));
        string path = Path.Combine(_dir, "t.gguf");
        writer.Write(path);

        var gguf = new GgufReader(path);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal("llama", gguf.Metadata["general.architecture"]);
        Assert.Equal(22u, gguf.Metadata["llama.block_count"]);
        Assert.Equal(10000f, gguf.Metadata["llama.rope.freq_base"]);
        Assert.Equal(true, gguf.Metadata["tokenizer.ggml.add_bos_token"]);
        Assert.Equal(["a", "Ġb", "<|eot_id|>"], ((object[])gguf.Metadata["tokenizer.ggml.tokens"]).Cast<string>());
        Assert.Equal([1, 1, 3], ((object[])gguf.Metadata["tokenizer.ggml.token_type"]).Cast<int>());
        Assert.Equal(["v", "m16", "m8"], gguf.Tensors.Select(t => t.Name));
        Assert.Equal([64L, 3L], gguf.Tensor("m8").Dims);
        Assert.Equal([0u, 1u, 8u], gguf.Tensors.Select(t => t.Type));
        Assert.Equal(0, gguf.DataStart % 32);
        Assert.All(gguf.Tensors, t => Assert.Equal(0, t.Offset % 32));
        Assert.Equal(0, gguf.Bytes.Length % 32);

        var v = gguf.Data(gguf.Tensor("v"), 7 * 4);
        Assert.Equal(vector, Enumerable.Range(0, 7).Select(i => BinaryPrimitives.ReadSingleLittleEndian(v.AsSpan(i * 4))));
        var h = gguf.Data(gguf.Tensor("m16"), matrix.Length * 2);
        Assert.Equal(matrix.Select(x => (float)(Half)x), Enumerable.Range(0, matrix.Length).Select(i => (float)BinaryPrimitives.ReadHalfLittleEndian(h.AsSpan(i * 2))));
        AssertQ8Decodes(gguf.Data(gguf.Tensor("m8"), matrix.Length / 32 * 34), matrix);
    }

    [Fact]
    public void Q8_0_blocks_decode_within_half_a_step_and_zero_blocks_stay_zero()
    {
        var rng = new Random(11);
        // Blocks of very different scales, an all-zero block and one with a single large value.
        var values = new float[32 * 5];
        for (int i = 0; i < 32; i++) values[i] = (float)(rng.NextDouble() - 0.5) * 1e-3f;
        for (int i = 32; i < 64; i++) values[i] = (float)(rng.NextDouble() - 0.5) * 300f;
        values[96 + 7] = -5f;
        for (int i = 128; i < 160; i++) values[i] = i % 2 == 0 ? 1f : -1f;
        byte[] encoded = GgufTensorEncoding.EncodeQ8_0(values);
        Assert.Equal(5 * GgufTensorEncoding.Q8BlockBytes, encoded.Length);
        AssertQ8Decodes(encoded, values);
        Assert.All(encoded.AsSpan(2 * 34, 34).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(-127, (sbyte)encoded[3 * 34 + 2 + 7]);
        Assert.Throws<ArgumentException>(() => GgufTensorEncoding.EncodeQ8_0(new float[33]));
    }

    /// <summary>
    /// Each block's fp16 scale is d = max|w|/127 rounded to fp16; q = round(w/d) with the unrounded d, so
    /// |d16·q − w| ≤ d/2 + |d16 − d|·|q|: half a step plus the scale's own rounding.
    /// </summary>
    private static void AssertQ8Decodes(ReadOnlySpan<byte> encoded, float[] values)
    {
        for (int b = 0; b < values.Length / 32; b++)
        {
            var block = encoded.Slice(b * 34, 34);
            float d16 = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            float d = values.Skip(b * 32).Take(32).Max(Math.Abs) / 127f;
            for (int i = 0; i < 32; i++)
            {
                int q = (sbyte)block[2 + i];
                float w = values[b * 32 + i];
                Assert.InRange(Math.Abs(d16 * q - w), 0, d / 2 + Math.Abs(d16 - d) * Math.Abs(q) + 1e-12f);
            }
        }
    }

    [Fact]
    public void An_exported_model_has_llama_names_shapes_hyperparameters_tokenizer_and_interleaved_q_k()
    {
        string model = Path.Combine(_dir, "tiny");
        var config = RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", TieWordEmbeddings = false });
        string path = Path.Combine(_dir, "tiny.gguf");
        GgufExport.Write(model, path, GgmlType.F32);

        var gguf = new GgufReader(path);
        Assert.Equal("llama", gguf.Metadata["general.architecture"]);
        Assert.Equal((uint)config.HiddenSize, gguf.Metadata["llama.embedding_length"]);
        Assert.Equal((uint)config.NumLayers, gguf.Metadata["llama.block_count"]);
        Assert.Equal((uint)config.IntermediateSize, gguf.Metadata["llama.feed_forward_length"]);
        Assert.Equal((uint)config.NumHeads, gguf.Metadata["llama.attention.head_count"]);
        Assert.Equal((uint)config.NumKvHeads, gguf.Metadata["llama.attention.head_count_kv"]);
        Assert.Equal((uint)config.MaxPositionEmbeddings, gguf.Metadata["llama.context_length"]);
        Assert.Equal((float)config.RopeTheta, gguf.Metadata["llama.rope.freq_base"]);
        Assert.Equal((float)config.RmsNormEps, gguf.Metadata["llama.attention.layer_norm_rms_epsilon"]);
        Assert.Equal("gpt2", gguf.Metadata["tokenizer.ggml.model"]);
        var tokens = (object[])gguf.Metadata["tokenizer.ggml.tokens"];
        Assert.Equal(config.VocabSize, tokens.Length);
        Assert.Equal("Ġ", tokens[32]);  // byte 0x20 in the byte-level alphabet
        var types = ((object[])gguf.Metadata["tokenizer.ggml.token_type"]).Cast<int>().ToList();
        Assert.Equal(3, types[config.EosTokenIds[0]]);
        Assert.Equal(1, types[0]);
        Assert.Contains(" ", (string)((object[])gguf.Metadata["tokenizer.ggml.merges"])[0], StringComparison.Ordinal);
        Assert.Equal((uint)config.BosTokenId!.Value, gguf.Metadata["tokenizer.ggml.bos_token_id"]);

        var expectedNames = new List<string> { "token_embd.weight" };
        for (int i = 0; i < config.NumLayers; i++)
            expectedNames.AddRange(LayerTensors.Select(n => $"blk.{i}.{n}.weight"));
        expectedNames.AddRange(["output_norm.weight", "output.weight"]);
        Assert.Equal(expectedNames, gguf.Tensors.Select(t => t.Name));
        Assert.Equal([(long)config.HiddenSize, config.VocabSize], gguf.Tensor("token_embd.weight").Dims);
        Assert.Equal([(long)config.IntermediateSize, config.HiddenSize], gguf.Tensor("blk.0.ffn_down.weight").Dims);
        Assert.Equal([(long)config.HiddenSize, (long)config.NumKvHeads * config.HeadDim], gguf.Tensor("blk.1.attn_k.weight").Dims);

        using var checkpoint = new CheckpointReader(model);
        float[] Read(string name, long count)
        {
            var bytes = gguf.Data(gguf.Tensor(name), count * 4);
            return [.. Enumerable.Range(0, (int)count).Select(i => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4)))];
        }
        var hfQ = checkpoint.Read("model.layers.1.self_attn.q_proj.weight");
        Assert.Equal(RopeLayout.RotateHalfToInterleaved(hfQ, config.NumHeads, config.HeadDim, config.HiddenSize), Read("blk.1.attn_q.weight", hfQ.Length));
        Assert.NotEqual(hfQ, Read("blk.1.attn_q.weight", hfQ.Length));
        var hfK = checkpoint.Read("model.layers.0.self_attn.k_proj.weight");
        Assert.Equal(RopeLayout.RotateHalfToInterleaved(hfK, config.NumKvHeads, config.HeadDim, config.HiddenSize), Read("blk.0.attn_k.weight", hfK.Length));
        var hfV = checkpoint.Read("model.layers.0.self_attn.v_proj.weight");
        Assert.Equal(hfV, Read("blk.0.attn_v.weight", hfV.Length));
        var head = checkpoint.Read("lm_head.weight");
        Assert.Equal(head, Read("output.weight", head.Length));
    }

    [Theory]
    [InlineData("F16", 1u)]
    [InlineData("Q8_0", 7u)]
    public void Narrow_exports_keep_norms_in_f32_and_name_their_file_type(string width, uint fileType)
    {
        var type = Enum.Parse<GgmlType>(width);
        string model = Path.Combine(_dir, "tiny");
        RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny" });
        string path = Path.Combine(_dir, $"tiny-{type}.gguf");
        GgufExport.Write(model, path, type);

        var gguf = new GgufReader(path);
        Assert.Equal(fileType, gguf.Metadata["general.file_type"]);
        Assert.All(gguf.Tensors.Where(t => t.Name.Contains("norm", StringComparison.Ordinal)), t => Assert.Equal(0u, t.Type));
        Assert.All(gguf.Tensors.Where(t => t.Dims.Length == 2), t => Assert.Equal((uint)type, t.Type));
        // The tiny preset ties its embeddings: llama.cpp then reads token_embd as the head.
        Assert.DoesNotContain(gguf.Tensors, t => t.Name == "output.weight");
    }

    [Fact]
    public void Rope_scaling_kinds_llama_cpp_cannot_read_are_refused()
    {
        string model = Path.Combine(_dir, "yarn");
        RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", RopeScaling = new RopeScaling(RopeScalingType.Yarn, Factor: 4, OriginalMaxPositionEmbeddings: 1024) });
        var e = Assert.Throws<ArgumentException>(() => GgufExport.Write(model, Path.Combine(_dir, "yarn.gguf"), GgmlType.F32));
        Assert.Contains("Yarn", e.Message, StringComparison.Ordinal);
    }
}
