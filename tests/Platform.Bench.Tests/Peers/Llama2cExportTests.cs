// The llama2.c export: run.c's header, every tensor at the offset run.c's memory_map_weights gives it
// (q/k rows interleaved, w1 = gate, w2 = down, w3 = up, the unused RoPE tables, the unshared head
// last), the file size, and tokenizer.bin's entries as raw bytes.
using System.Buffers.Binary;
using System.Text;
using Platform.Bench.Peers;
using Platform.Core.Models;

namespace Platform.Bench.Tests.Peers;

public sealed class Llama2cExportTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("llama2c-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Checkpoint_layout_is_the_one_run_c_maps()
    {
        string model = Path.Combine(_dir, "tiny");
        var c = RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", TieWordEmbeddings = false });
        string path = Path.Combine(_dir, "tiny.bin");
        const int seqLen = 64;
        Llama2cExport.Write(model, path, seqLen);
        byte[] file = File.ReadAllBytes(path);
        int Int(int index) => BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(index * 4));
        Assert.Equal([c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, -c.VocabSize, seqLen], Enumerable.Range(0, 7).Select(Int));

        long dim = c.HiddenSize, hidden = c.IntermediateSize, layers = c.NumLayers, vocab = c.VocabSize;
        long q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        long offset = 7 * 4;
        var offsets = new Dictionary<string, long>();
        void Next(string name, long floats) { offsets[name] = offset; offset += floats * 4; }
        Next("embed", vocab * dim);
        Next("rms_att", layers * dim);
        Next("wq", layers * dim * q);
        Next("wk", layers * dim * kv);
        Next("wv", layers * dim * kv);
        Next("wo", layers * q * dim);
        Next("rms_ffn", layers * dim);
        Next("w1", layers * dim * hidden);
        Next("w2", layers * hidden * dim);
        Next("w3", layers * dim * hidden);
        Next("rms_final", dim);
        Next("rope", 2L * seqLen * c.HeadDim / 2);
        Next("wcls", vocab * dim);
        Assert.Equal(offset, file.LongLength);

        using var checkpoint = new CheckpointReader(model);
        float[] At(string name, int layer, long perLayer) =>
            [.. Enumerable.Range(0, (int)perLayer).Select(i => BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)(offsets[name] + (layer * perLayer + i) * 4))))];
        Assert.Equal(checkpoint.Read("model.embed_tokens.weight"), At("embed", 0, vocab * dim));
        Assert.Equal(checkpoint.Read("model.layers.1.input_layernorm.weight"), At("rms_att", 1, dim));
        Assert.Equal(RopeLayout.RotateHalfToInterleaved(checkpoint.Read("model.layers.1.self_attn.q_proj.weight"), c.NumHeads, c.HeadDim, c.HiddenSize), At("wq", 1, dim * q));
        Assert.Equal(RopeLayout.RotateHalfToInterleaved(checkpoint.Read("model.layers.0.self_attn.k_proj.weight"), c.NumKvHeads, c.HeadDim, c.HiddenSize), At("wk", 0, dim * kv));
        Assert.Equal(checkpoint.Read("model.layers.1.self_attn.v_proj.weight"), At("wv", 1, dim * kv));
        Assert.Equal(checkpoint.Read("model.layers.1.self_attn.o_proj.weight"), At("wo", 1, q * dim));
        Assert.Equal(checkpoint.Read("model.layers.0.post_attention_layernorm.weight"), At("rms_ffn", 0, dim));
        Assert.Equal(checkpoint.Read("model.layers.1.mlp.gate_proj.weight"), At("w1", 1, dim * hidden));
        Assert.Equal(checkpoint.Read("model.layers.1.mlp.down_proj.weight"), At("w2", 1, dim * hidden));
        Assert.Equal(checkpoint.Read("model.layers.0.mlp.up_proj.weight"), At("w3", 0, dim * hidden));
        Assert.Equal(checkpoint.Read("model.norm.weight"), At("rms_final", 0, dim));
        Assert.All(At("rope", 0, 2L * seqLen * c.HeadDim / 2), v => Assert.Equal(0f, v));
        Assert.Equal(checkpoint.Read("lm_head.weight"), At("wcls", 0, vocab * dim));
    }

    [Fact]
    public void Tied_embeddings_give_a_positive_vocab_size_and_no_head()
    {
        string model = Path.Combine(_dir, "tied");
        var c = RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", TieWordEmbeddings = true });
        string path = Path.Combine(_dir, "tied.bin");
        Llama2cExport.Write(model, path, seqLen: 16);
        byte[] file = File.ReadAllBytes(path);
        Assert.Equal(c.VocabSize, BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(5 * 4)));
        long dim = c.HiddenSize, layers = c.NumLayers, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim, hidden = c.IntermediateSize;
        long floats = c.VocabSize * dim + 2 * layers * dim + layers * dim * (2 * q + 2 * kv) + 3 * layers * dim * hidden + dim + 16L * c.HeadDim;
        Assert.Equal(7 * 4 + floats * 4, file.LongLength);
    }

    [Fact]
    public void Models_whose_rope_or_norm_run_c_cannot_express_are_refused()
    {
        string model = Path.Combine(_dir, "qwen");
        RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", ModelType = "qwen2" });
        Assert.Throws<ArgumentException>(() => Llama2cExport.Write(model, Path.Combine(_dir, "qwen.bin"), 16));
    }

    [Fact]
    public void Tokenizer_bin_holds_raw_bytes_with_scores_by_id()
    {
        string model = Path.Combine(_dir, "tiny");
        var c = RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny" });
        string path = Path.Combine(_dir, "tokenizer.bin");
        Llama2cExport.WriteTokenizer(model, path);
        using var reader = new BinaryReader(File.OpenRead(path));
        int maxLength = reader.ReadInt32();
        var pieces = new List<byte[]>();
        for (int id = 0; id < c.VocabSize; id++)
        {
            Assert.Equal(-id, reader.ReadSingle());
            pieces.Add(reader.ReadBytes(reader.ReadInt32()));
        }
        Assert.Equal(reader.BaseStream.Length, reader.BaseStream.Position);
        Assert.Equal(pieces.Max(p => p.Length), maxLength);
        Assert.Equal([(byte)' '], pieces[32]);
        Assert.Equal([(byte)0], pieces[0]);
        Assert.Equal([(byte)0xFF], pieces[255]);
        var tokenizer = Platform.Core.Tokenization.HfTokenizer.Load(model);
        Assert.Equal("<|eot_id|>", Encoding.UTF8.GetString(pieces[c.EosTokenIds[0]]));
        // Merged tokens decode to the bytes the model's own tokenizer gives them.
        for (int id = 256; id < 300; id++) Assert.Equal(tokenizer.Decode([id]), Encoding.UTF8.GetString(pieces[id]));
    }
}
