// A deliberately naive float64 Llama forward pass in plain loops, written
// independently of the engine (its own RoPE formulas, its own attention, no
// KV cache, no TorchSharp), so that agreement with the engine means something.
// Sliding-window attention too: which layers slide and how far is read from
// config.json here with Hugging Face's own rules (not through ModelConfig), and
// a query at position t sees key s when s <= t and t - s < window, as
// transformers' masking_utils writes it (kv_idx > q_idx - sliding_window).
using System.Runtime.InteropServices;
using Platform.Core.Models;
using Platform.Core.Safetensors;

namespace Platform.Engine.Tests;

internal sealed class NaiveReference
{
    private readonly ModelConfig _c;
    private readonly Dictionary<string, double[]> _w = [];
    /// <summary>Per layer, how many keys a query sees (itself included); null: all earlier ones.</summary>
    private readonly int?[] _window;

    public NaiveReference(string modelDir)
    {
        _c = ModelConfig.Load(modelDir);
        _window = SlidingWindows(Path.Combine(modelDir, "config.json"), _c.NumLayers);
        using var weights = ModelWeights.Open(modelDir);
        foreach (var name in weights.TensorNames)
        {
            var (file, info) = weights.Get(name);
            var bytes = file.GetBytes(info);
            var values = new double[info.ElementCount];
            switch (info.Dtype)
            {
                case SafetensorsDtype.F32:
                    var f = MemoryMarshal.Cast<byte, float>(bytes);
                    for (int i = 0; i < f.Length; i++) values[i] = f[i];
                    break;
                case SafetensorsDtype.F16:
                    var h = MemoryMarshal.Cast<byte, Half>(bytes);
                    for (int i = 0; i < h.Length; i++) values[i] = (double)h[i];
                    break;
                case SafetensorsDtype.BF16:
                    var b = MemoryMarshal.Cast<byte, ushort>(bytes);
                    for (int i = 0; i < b.Length; i++) values[i] = BitConverter.UInt32BitsToSingle((uint)b[i] << 16);
                    break;
                default: throw new NotSupportedException(info.Dtype.ToString());
            }
            _w[name] = values;
        }
    }

    /// <summary>Logits of every position of <paramref name="tokens"/>: [n][vocab].</summary>
    public double[][] Logits(IReadOnlyList<int> tokens)
    {
        var c = _c;
        int n = tokens.Count, hdim = c.HiddenSize, d = c.HeadDim;
        var x = new double[n][];
        var embed = _w["model.embed_tokens.weight"];
        for (int t = 0; t < n; t++) x[t] = embed.AsSpan(tokens[t] * hdim, hdim).ToArray();
        var (invFreq, mscale) = InverseFrequencies();

        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var q = new double[n][]; var k = new double[n][]; var v = new double[n][];
            for (int t = 0; t < n; t++)
            {
                var h = RmsNorm(x[t], _w[p + "input_layernorm.weight"]);
                q[t] = MatVec(_w[p + "self_attn.q_proj.weight"], h, c.NumHeads * d, _w.GetValueOrDefault(p + "self_attn.q_proj.bias"));
                k[t] = MatVec(_w[p + "self_attn.k_proj.weight"], h, c.NumKvHeads * d, _w.GetValueOrDefault(p + "self_attn.k_proj.bias"));
                v[t] = MatVec(_w[p + "self_attn.v_proj.weight"], h, c.NumKvHeads * d, _w.GetValueOrDefault(p + "self_attn.v_proj.bias"));
                Rotate(q[t], c.NumHeads, t, invFreq, mscale);
                Rotate(k[t], c.NumKvHeads, t, invFreq, mscale);
            }
            for (int t = 0; t < n; t++)
            {
                var attn = new double[c.NumHeads * d];
                bool Sees(int s) => s <= t && (_window[l] is not { } w || t - s < w);
                for (int head = 0; head < c.NumHeads; head++)
                {
                    int kvHead = head / (c.NumHeads / c.NumKvHeads);
                    var scores = new double[t + 1];
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        if (!Sees(s)) continue;
                        double dot = 0;
                        for (int i = 0; i < d; i++) dot += q[t][head * d + i] * k[s][kvHead * d + i];
                        scores[s] = dot / Math.Sqrt(d);
                        max = Math.Max(max, scores[s]);
                    }
                    double sum = 0;
                    for (int s = 0; s <= t; s++) if (Sees(s)) { scores[s] = Math.Exp(scores[s] - max); sum += scores[s]; }
                    for (int s = 0; s <= t; s++)
                        if (Sees(s))
                            for (int i = 0; i < d; i++) attn[head * d + i] += scores[s] / sum * v[s][kvHead * d + i];
                }
                var o = MatVec(_w[p + "self_attn.o_proj.weight"], attn, hdim, null);
                for (int i = 0; i < hdim; i++) x[t][i] += o[i];
                var h2 = RmsNorm(x[t], _w[p + "post_attention_layernorm.weight"]);
                var gate = MatVec(_w[p + "mlp.gate_proj.weight"], h2, c.IntermediateSize, null);
                var up = MatVec(_w[p + "mlp.up_proj.weight"], h2, c.IntermediateSize, null);
                for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
                var down = MatVec(_w[p + "mlp.down_proj.weight"], gate, hdim, null);
                for (int i = 0; i < hdim; i++) x[t][i] += down[i];
            }
        }
        var head_ = _w.TryGetValue("lm_head.weight", out var lm) ? lm : embed;
        var logits = new double[n][];
        for (int t = 0; t < n; t++) logits[t] = MatVec(head_, RmsNorm(x[t], _w["model.norm.weight"]), c.VocabSize, null);
        return logits;
    }

    /// <summary>
    /// Hugging Face's sliding-window rules, straight from config.json: MistralConfig slides every layer by
    /// sliding_window (4096 when absent, none when null); Qwen2Config only when use_sliding_window, by
    /// sliding_window (4096 when absent, none when null), in the layers marked "sliding_attention" by layer_types
    /// or else those with index >= max_window_layers (default 28); LlamaConfig never.
    /// </summary>
    private static int?[] SlidingWindows(string configPath, int layers)
    {
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        int? Window() => root.TryGetPropertyValue("sliding_window", out var node) ? node?.GetValue<int>() : 4096;
        var windows = new int?[layers];
        switch ((string?)root["model_type"])
        {
            case "mistral":
                Array.Fill(windows, Window());
                break;
            case "qwen2" when root["use_sliding_window"]?.GetValue<bool>() == true && Window() is { } w:
                var types = root["layer_types"]?.AsArray();
                int fromLayer = root["max_window_layers"]?.GetValue<int>() ?? 28;
                for (int l = 0; l < layers; l++)
                    if (types is not null ? (string?)types[l] == "sliding_attention" : l >= fromLayer) windows[l] = w;
                break;
        }
        return windows;
    }

    private double[] RmsNorm(double[] x, double[] weight)
    {
        double ms = 0;
        foreach (double a in x) ms += a * a;
        double scale = 1.0 / Math.Sqrt(ms / x.Length + _c.RmsNormEps);
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * scale * weight[i];
        return y;
    }

    private static double[] MatVec(double[] w, double[] x, int rows, double[]? bias)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double acc = bias?[r] ?? 0;
            for (int i = 0; i < x.Length; i++) acc += w[r * x.Length + i] * x[i];
            y[r] = acc;
        }
        return y;
    }

    /// <summary>Rotates pairs (i, i + d/2) of every head by position × frequency (HF's rotate-half layout).</summary>
    private void Rotate(double[] vec, int heads, int pos, double[] invFreq, double mscale)
    {
        int d = _c.HeadDim, half = d / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                double angle = pos * invFreq[i];
                double cos = Math.Cos(angle) * mscale, sin = Math.Sin(angle) * mscale;
                double a = vec[h * d + i], b = vec[h * d + i + half];
                vec[h * d + i] = a * cos - b * sin;
                vec[h * d + i + half] = b * cos + a * sin;
            }
    }

    /// <summary>The RoPE inverse frequencies, written from the published formulas of each scaling.</summary>
    private (double[] InvFreq, double Mscale) InverseFrequencies()
    {
        var c = _c;
        var s = c.RopeScaling;
        int d = c.HeadDim, half = d / 2;
        var freq = new double[half];
        for (int i = 0; i < half; i++) freq[i] = Math.Pow(c.RopeTheta, -(2.0 * i) / d);
        double mscale = 1.0;
        switch (s.Type)
        {
            case RopeScalingType.Linear:
                for (int i = 0; i < half; i++) freq[i] /= s.Factor;
                break;
            case RopeScalingType.Dynamic:
            {
                // NTK-aware base for the extended length L = original × factor (applied statically).
                double orig = s.OriginalMaxPositionEmbeddings ?? c.MaxPositionEmbeddings;
                double newBase = c.RopeTheta * Math.Pow(s.Factor * (orig * s.Factor) / orig - (s.Factor - 1), d / (d - 2.0));
                for (int i = 0; i < half; i++) freq[i] = Math.Pow(newBase, -(2.0 * i) / d);
                break;
            }
            case RopeScalingType.Llama3:
            {
                double orig = s.OriginalMaxPositionEmbeddings ?? 8192;
                for (int i = 0; i < half; i++)
                {
                    double wavelen = 2 * Math.PI / freq[i];
                    if (wavelen > orig / s.LowFreqFactor) freq[i] /= s.Factor;
                    else if (wavelen >= orig / s.HighFreqFactor)
                    {
                        double smooth = (orig / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                        freq[i] = (1 - smooth) * freq[i] / s.Factor + smooth * freq[i];
                    }
                }
                break;
            }
            case RopeScalingType.Yarn:
            {
                double orig = s.OriginalMaxPositionEmbeddings ?? c.MaxPositionEmbeddings;
                double Dim(double rot) => d * Math.Log(orig / (rot * 2 * Math.PI)) / (2 * Math.Log(c.RopeTheta));
                double lo = Math.Max(0, Math.Floor(Dim(s.BetaFast)));
                double hi = Math.Min(d - 1, Math.Ceiling(Dim(s.BetaSlow)));
                if (hi == lo) hi += 0.001;
                for (int i = 0; i < half; i++)
                {
                    double ramp = Math.Min(1, Math.Max(0, (i - lo) / (hi - lo)));
                    // ramp 0 → keep the original frequency (extrapolate), 1 → divide by factor (interpolate).
                    freq[i] = freq[i] * (1 - ramp) + freq[i] / s.Factor * ramp;
                }
                mscale = s.AttentionFactor ?? (0.1 * Math.Log(s.Factor) + 1.0);
                break;
            }
        }
        return (freq, mscale);
    }
}
