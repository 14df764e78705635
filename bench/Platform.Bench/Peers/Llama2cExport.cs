// Writes a Hugging Face Llama checkpoint in llama2.c's checkpoint format (run.c's "legacy" version 0)
// and a tokenizer.bin run.c can read, so llama2.c runs the very weights the engine runs.
//
// Checkpoint: a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; vocab_size negative when the output head is not the embedding), then fp32 tensors in
// PyTorch [out, in] order, each kind for all layers before the next kind: token embedding, attention
// norms, wq, wk, wv, wo, ffn norms, w1 (gate), w2 (down), w3 (up), final norm, two unused RoPE
// tables of seq_len·head_size/2 floats each (written as zeros), then the output head if not shared.
// q and k rows go to interleaved RoPE pairs (RopeLayout), the pairs run.c rotates.
// run.c fixes RoPE θ = 10000 and RMSNorm ε = 1e-5, so other models are refused rather than run wrong.
//
// tokenizer.bin: int32 max token length, then per id a float score, an int32 byte length and the
// token's bytes. The bytes are the byte-level BPE token decoded to raw bytes; the score is minus the
// id, so run.c's greedy merge prefers earlier (lower-id) merges as BPE does.
using System.Text;
using System.Text.Json;

namespace Platform.Bench.Peers;

internal static class Llama2cExport
{
    public const int HeaderInts = 7;
    public const double RopeTheta = 10000.0;
    public const double RmsNormEps = 1e-5;

    public static void Write(string modelDirectory, string checkpointPath, int seqLen)
    {
        using var checkpoint = new CheckpointReader(modelDirectory);
        var c = checkpoint.Config;
        if (c.RopeTheta != RopeTheta || Math.Abs(c.RmsNormEps - RmsNormEps) > 1e-12 || c.RopeScaling.Type != Platform.Core.Models.RopeScalingType.None)
            throw new ArgumentException($"llama2.c fixes rope theta {RopeTheta}, RMSNorm eps {RmsNormEps} and no rope scaling; this model has theta {c.RopeTheta}, eps {c.RmsNormEps}, scaling {c.RopeScaling.Type}");
        if (c.HeadDim * c.NumHeads != c.HiddenSize)
            throw new ArgumentException($"llama2.c needs head_dim × heads = hidden size; this model has {c.HeadDim} × {c.NumHeads} ≠ {c.HiddenSize}");
        string tmp = checkpointPath + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        using (var w = new BinaryWriter(stream))
        {
            foreach (int v in new[] { c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.TieWordEmbeddings ? c.VocabSize : -c.VocabSize, seqLen })
                w.Write(v);
            void Floats(float[] values) => w.Write(GgufTensorEncoding.EncodeF32(values));
            void PerLayer(string suffix, Func<float[], float[]>? rearrange = null)
            {
                for (int i = 0; i < c.NumLayers; i++)
                {
                    var values = checkpoint.Read($"model.layers.{i}.{suffix}");
                    Floats(rearrange is null ? values : rearrange(values));
                }
            }
            Floats(checkpoint.Read("model.embed_tokens.weight"));
            PerLayer("input_layernorm.weight");
            PerLayer("self_attn.q_proj.weight", v => RopeLayout.RotateHalfToInterleaved(v, c.NumHeads, c.HeadDim, c.HiddenSize));
            PerLayer("self_attn.k_proj.weight", v => RopeLayout.RotateHalfToInterleaved(v, c.NumKvHeads, c.HeadDim, c.HiddenSize));
            PerLayer("self_attn.v_proj.weight");
            PerLayer("self_attn.o_proj.weight");
            PerLayer("post_attention_layernorm.weight");
            PerLayer("mlp.gate_proj.weight");
            PerLayer("mlp.down_proj.weight");
            PerLayer("mlp.up_proj.weight");
            Floats(checkpoint.Read("model.norm.weight"));
            w.Write(new byte[(long)seqLen * c.HeadDim / 2 * 2 * 4]);
            if (!c.TieWordEmbeddings) Floats(checkpoint.Read("lm_head.weight"));
        }
        File.Move(tmp, checkpointPath, overwrite: true);
    }

    /// <summary>Writes tokenizer.bin from the model's tokenizer.json (byte-level BPE), one entry per model id.</summary>
    public static void WriteTokenizer(string modelDirectory, string tokenizerPath)
    {
        var config = Platform.Core.Models.ModelConfig.Load(modelDirectory);
        var pieces = TokenBytes(Path.Combine(modelDirectory, "tokenizer.json"), config.VocabSize);
        using var w = new BinaryWriter(File.Create(tokenizerPath));
        w.Write(pieces.Max(p => p.Length));
        for (int id = 0; id < pieces.Length; id++)
        {
            w.Write((float)-id);
            w.Write(pieces[id].Length);
            w.Write(pieces[id]);
        }
    }

    /// <summary>Each id's bytes: vocabulary strings mapped back through GPT-2's byte-to-character table; special tokens as their text.</summary>
    internal static byte[][] TokenBytes(string tokenizerJson, int vocabSize)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJson));
        var byteOf = ByteLevelCharacterToByte();
        var pieces = new byte[vocabSize][];
        foreach (var entry in doc.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            if (id < vocabSize) pieces[id] = [.. entry.Name.Select(ch => byteOf[ch])];
        }
        if (doc.RootElement.TryGetProperty("added_tokens", out var added))
        {
            foreach (var token in added.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                if (id < vocabSize) pieces[id] = Encoding.UTF8.GetBytes(token.GetProperty("content").GetString()!);
            }
        }
        for (int id = 0; id < vocabSize; id++) pieces[id] ??= Encoding.UTF8.GetBytes($"[PAD{id}]");
        return pieces;
    }

    /// <summary>
    /// GPT-2's byte-level alphabet, inverted: printable Latin-1 bytes stand for themselves, every other
    /// byte b is the character 256 + (its rank among those bytes).
    /// </summary>
    private static Dictionary<char, byte> ByteLevelCharacterToByte()
    {
        static bool Printable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        var map = new Dictionary<char, byte>();
        int next = 0;
        for (int b = 0; b < 256; b++) map[Printable(b) ? (char)b : (char)(256 + next++)] = (byte)b;
        return map;
    }
}
