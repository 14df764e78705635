// Writes a Hugging Face Llama checkpoint as a GGUF file for llama.cpp's "llama" architecture, at f32,
// f16 or q8_0, so llama.cpp runs the very weights the engine runs:
//  * tensors renamed to llama.cpp's names (token_embd, blk.N.attn_q, …, output_norm, output) with
//    dimensions innermost first; norm vectors stay f32 at every width, as llama.cpp's converter keeps
//    1-D tensors;
//  * q and k rows moved from rotate-half to interleaved RoPE pairs (RopeLayout), the layout llama.cpp's
//    llama graph rotates;
//  * llama.* hyperparameters, and rope scaling: linear as llama.rope.scaling.*, Llama 3 as a rope_freqs
//    tensor of per-pair frequency divisors (the form llama.cpp reads for it); other kinds are refused;
//  * the checkpoint's tokenizer.json (byte-level BPE) as a "gpt2" vocabulary: tokens in id order, the
//    merges, token types (special added tokens are control tokens) and the bos/eos ids.
using System.Text.Json;
using Platform.Core.Models;

namespace Platform.Bench.Peers;

internal static class GgufExport
{
    /// <summary>general.file_type for each width (llama_ftype).</summary>
    private static uint FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q8_0 => 7,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported GGUF width"),
    };

    public static void Write(string modelDirectory, string ggufPath, GgmlType type, IProgress<double>? progress = null)
    {
        using var checkpoint = new CheckpointReader(modelDirectory);
        var c = checkpoint.Config;
        var gguf = new GgufWriter();
        gguf.AddString("general.architecture", "llama");
        gguf.AddString("general.name", Path.GetFileName(Path.TrimEndingDirectorySeparator(modelDirectory)));
        gguf.AddUInt32("general.file_type", FileType(type));
        gguf.AddUInt32("llama.context_length", (uint)c.MaxPositionEmbeddings);
        gguf.AddUInt32("llama.embedding_length", (uint)c.HiddenSize);
        gguf.AddUInt32("llama.block_count", (uint)c.NumLayers);
        gguf.AddUInt32("llama.feed_forward_length", (uint)c.IntermediateSize);
        gguf.AddUInt32("llama.attention.head_count", (uint)c.NumHeads);
        gguf.AddUInt32("llama.attention.head_count_kv", (uint)c.NumKvHeads);
        gguf.AddUInt32("llama.attention.key_length", (uint)c.HeadDim);
        gguf.AddUInt32("llama.attention.value_length", (uint)c.HeadDim);
        gguf.AddUInt32("llama.rope.dimension_count", (uint)c.HeadDim);
        gguf.AddFloat32("llama.rope.freq_base", (float)c.RopeTheta);
        gguf.AddFloat32("llama.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        gguf.AddUInt32("llama.vocab_size", (uint)c.VocabSize);
        AddRopeScaling(gguf, c);
        AddTokenizer(gguf, modelDirectory, c);

        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        void Matrix(string ggufName, string hfName, long rows, long columns, Func<float[], float[]>? rearrange = null) =>
            gguf.AddTensor(ggufName, type, [columns, rows], () =>
            {
                var values = checkpoint.Read(hfName);
                return GgufTensorEncoding.Encode(rearrange is null ? values : rearrange(values), type);
            });
        void Vector(string ggufName, string hfName, long length) =>
            gguf.AddTensor(ggufName, GgmlType.F32, [length], () => GgufTensorEncoding.EncodeF32(checkpoint.Read(hfName)));

        Matrix("token_embd.weight", "model.embed_tokens.weight", c.VocabSize, h);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string hf = $"model.layers.{i}.", blk = $"blk.{i}.";
            Vector(blk + "attn_norm.weight", hf + "input_layernorm.weight", h);
            Matrix(blk + "attn_q.weight", hf + "self_attn.q_proj.weight", q, h,
                w => RopeLayout.RotateHalfToInterleaved(w, c.NumHeads, c.HeadDim, c.HiddenSize));
            Matrix(blk + "attn_k.weight", hf + "self_attn.k_proj.weight", kv, h,
                w => RopeLayout.RotateHalfToInterleaved(w, c.NumKvHeads, c.HeadDim, c.HiddenSize));
            Matrix(blk + "attn_v.weight", hf + "self_attn.v_proj.weight", kv, h);
            Matrix(blk + "attn_output.weight", hf + "self_attn.o_proj.weight", h, q);
            Vector(blk + "ffn_norm.weight", hf + "post_attention_layernorm.weight", h);
            Matrix(blk + "ffn_gate.weight", hf + "mlp.gate_proj.weight", c.IntermediateSize, h);
            Matrix(blk + "ffn_up.weight", hf + "mlp.up_proj.weight", c.IntermediateSize, h);
            Matrix(blk + "ffn_down.weight", hf + "mlp.down_proj.weight", h, c.IntermediateSize);
        }
        Vector("output_norm.weight", "model.norm.weight", h);
        // With tied embeddings llama.cpp reads token_embd as the head when output.weight is absent.
        if (!c.TieWordEmbeddings) Matrix("output.weight", "lm_head.weight", c.VocabSize, h);
        gguf.Write(ggufPath, progress);
    }

    private static void AddRopeScaling(GgufWriter gguf, ModelConfig c)
    {
        var s = c.RopeScaling;
        switch (s.Type)
        {
            case RopeScalingType.None:
                return;
            case RopeScalingType.Linear:
                gguf.AddString("llama.rope.scaling.type", "linear");
                gguf.AddFloat32("llama.rope.scaling.factor", (float)s.Factor);
                return;
            case RopeScalingType.Llama3:
            {
                // llama.cpp divides each pair's base frequency by rope_freqs[i]; the divisor is base / scaled.
                var unscaled = RopeFrequencies.Compute(c.HeadDim, c.RopeTheta, RopeScaling.NoScaling, c.MaxPositionEmbeddings).InverseFrequencies;
                var scaled = RopeFrequencies.Compute(c.HeadDim, c.RopeTheta, s, c.MaxPositionEmbeddings).InverseFrequencies;
                var divisors = unscaled.Select((u, i) => (float)(u / scaled[i])).ToArray();
                gguf.AddTensor("rope_freqs.weight", GgmlType.F32, [divisors.Length], () => GgufTensorEncoding.EncodeF32(divisors));
                return;
            }
            default:
                throw new ArgumentException($"the GGUF export writes no rope scaling, linear or llama3; this model has {s.Type}");
        }
    }

    private static void AddTokenizer(GgufWriter gguf, string modelDirectory, ModelConfig c)
    {
        string path = Path.Combine(modelDirectory, "tokenizer.json");
        if (!File.Exists(path)) throw new ArgumentException($"{modelDirectory} has no tokenizer.json; the GGUF export carries the model's tokenizer");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var model = doc.RootElement.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            throw new ArgumentException($"{path}: the GGUF export writes byte-level BPE tokenizers, this one is {model.GetProperty("type")}");
        var tokens = new string?[c.VocabSize];
        var types = new int[c.VocabSize];
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            if (id < c.VocabSize) { tokens[id] = entry.Name; types[id] = 1; }  // 1 = normal
        }
        if (doc.RootElement.TryGetProperty("added_tokens", out var added))
        {
            foreach (var token in added.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                if (id >= c.VocabSize) continue;
                tokens[id] = token.GetProperty("content").GetString();
                types[id] = token.TryGetProperty("special", out var special) && special.GetBoolean() ? 3 : 4;  // control, user-defined
            }
        }
        // Ids the tokenizer never names (a vocabulary padded to the model's size) become unused placeholders.
        for (int id = 0; id < tokens.Length; id++)
        {
            if (tokens[id] is not null) continue;
            tokens[id] = $"[PAD{id}]";
            types[id] = 5;  // unused
        }
        var merges = model.GetProperty("merges").EnumerateArray()
            .Select(m => m.ValueKind == JsonValueKind.Array ? $"{m[0].GetString()} {m[1].GetString()}" : m.GetString()!)
            .ToList();
        gguf.AddString("tokenizer.ggml.model", "gpt2");
        gguf.AddString("tokenizer.ggml.pre", "llama-bpe");
        gguf.AddStringArray("tokenizer.ggml.tokens", tokens!);
        gguf.AddInt32Array("tokenizer.ggml.token_type", types);
        gguf.AddStringArray("tokenizer.ggml.merges", merges);
        if (c.BosTokenId is { } bos) gguf.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos);
        if (c.EosTokenIds.Count > 0) gguf.AddUInt32("tokenizer.ggml.eos_token_id", (uint)c.EosTokenIds[0]);
        gguf.AddBool("tokenizer.ggml.add_bos_token", c.BosTokenId is not null);
    }
}
