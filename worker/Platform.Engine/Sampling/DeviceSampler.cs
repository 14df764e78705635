// Samples a step's rows where their logits are (a GPU), so the only copy back to the host is one int32 per row.
// It draws the same token as Sampler for the same logits, seed and output index: the same weights
// (exp((l - max) / T) rounded to fp32, min-p as a threshold on them), the same order (descending, ties by index,
// when top-k or top-p is set; vocabulary order otherwise), the same top-k and top-p cut, and the same exponential
// race: each kept token's E = -log u from the same SplitMix64 stream (Sampler.StepKey uploaded per row, the
// per-token mixing done here in wrapping int64 arithmetic), the largest weight / E winning, ties to the lower id.
// The top-p shares are float64 sums as on the host, in a parallel scan's order, and the device's log may differ
// from the host's by an ulp: either moves a draw only when two candidates are within ~1e-15 of each other. Rows
// that need their logits on the host (logprobs, logit bias, penalties, returned logits) are the caller's to
// exclude: this class sees only logits and sampling parameters.
using Platform.Core.Hashing;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Sampling;

public static class DeviceSampler
{
    /// <summary>One row's sampling parameters, as <see cref="Sampler.Sample"/> takes them.</summary>
    public readonly record struct Row(double Temperature, int TopK, double TopP, double MinP, ulong Seed, int OutputIndex)
    {
        public bool Greedy => Temperature <= 0 || TopK == 1;
    }

    /// <summary>The token of each row of <paramref name="logits"/> ([rows, vocab], any device and float dtype).</summary>
    public static int[] Sample(Tensor logits, IReadOnlyList<Row> rows)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(rows);
        if (logits.dim() != 2 || logits.shape[0] != rows.Count)
            throw new ArgumentException($"logits must be [{rows.Count}, vocab], got [{string.Join(", ", logits.shape)}].", nameof(logits));
        using var scope = NewDisposeScope();
        var device = logits.device;
        var argmax = logits.argmax(1);
        bool anySampled = false, anySorted = false;
        foreach (var r in rows)
        {
            if (r.Greedy) continue;
            anySampled = true;
            anySorted |= SortsRow(r, logits.shape[1]);
        }
        if (!anySampled) return ToHost(argmax);

        long vocab = logits.shape[1];
        int n = rows.Count;
        // Per-row parameters, one upload: 1/T, min-p, top-k (vocab when off), top-p (2 when off), sorted?, greedy?; and
        // each row's draw key.
        var parameters = new double[n * 6];
        var keys = new long[n];
        for (int i = 0; i < n; i++)
        {
            var r = rows[i];
            var p = parameters.AsSpan(i * 6, 6);
            p[0] = r.Greedy ? 1 : 1.0 / r.Temperature;
            p[1] = r.MinP > 0 ? r.MinP : 0;
            p[2] = r.TopK > 0 && r.TopK < vocab ? r.TopK : vocab;
            p[3] = r.TopP < 1.0 ? r.TopP : 2;
            p[4] = SortsRow(r, vocab) ? 1 : 0;
            p[5] = r.Greedy ? 1 : 0;
            keys[i] = unchecked((long)Sampler.StepKey(r.Seed, r.OutputIndex));
        }
        var table = tensor(parameters, [n, 6], ScalarType.Float64).to(device);
        var invT = table[.., 0..1];
        var minP = table[.., 1..2];
        var topK = table[.., 2..3];
        var topP = table[.., 3..4];
        var sorts = table[.., 4..5].to_type(ScalarType.Bool);
        var greedy = table[.., 5].to_type(ScalarType.Bool);

        // Weights as the host makes them: float64 arithmetic, stored as fp32; the most likely token weighs 1.
        // The host subtracts the max in fp32 and scales in float64.
        var l32 = logits.to_type(ScalarType.Float32);
        var difference = (l32 - l32.amax([1], keepdim: true)).to_type(ScalarType.Float64);
        var weights = (difference * invT).exp_().to_type(ScalarType.Float32);
        weights = weights.masked_fill(weights.to_type(ScalarType.Float64) < minP, 0f);

        var w = weights.to_type(ScalarType.Float64);

        var positions = arange(vocab, ScalarType.Float64, device).unsqueeze(0);
        Tensor order, values;
        if (anySorted)
        {
            var (sortedValues, sortedOrder) = sort(weights, dim: 1, descending: true, stable: true);
            order = where(sorts, sortedOrder, arange(vocab, ScalarType.Int64, device).unsqueeze(0).expand(n, vocab));
            values = where(sorts, sortedValues, weights).to_type(ScalarType.Float64);
        }
        else
        {
            order = arange(vocab, ScalarType.Int64, device).unsqueeze(0).expand(n, vocab);
            values = w;
        }
        // Top-k keeps the first k positions; top-p keeps a position while the share before it is below p.
        var inTopK = positions < topK;
        var kept = values.masked_fill(inTopK.logical_not(), 0.0);
        var shareBefore = (kept.cumsum(1) - kept) / kept.sum(1, keepdim: true);
        var keep = inTopK.logical_and_(shareBefore < topP);

        // The race, in vocabulary order: the kept positions back to their token ids, weight / E for those with weight.
        var keptTokens = zeros([n, vocab], ScalarType.Bool, device).scatter_(1, order, keep);
        var e = Exponentials(tensor(keys, [n, 1], ScalarType.Int64).to(device), vocab);
        var score = where(keptTokens.logical_and_(w > 0), w / e, -1.0);
        var sampled = score.argmax(1);      // the first of equal maxima: the lower id, as on the host
        return ToHost(where(greedy, argmax, sampled));
    }

    /// <summary>-log u for every token of every row, u from <see cref="Sampler.Uniform"/> (bit for bit: SplitMix64 in wrapping int64).</summary>
    private static Tensor Exponentials(Tensor keys, long vocab)
    {
        // SplitMix64.At(key, token) for every token; the mixing is SplitMix64.Mix's.
        var z = keys + (arange(1, vocab + 1, ScalarType.Int64, keys.device) * unchecked((long)SplitMix64.Gamma)).unsqueeze(0);
        z = (z ^ ShiftRight(z, 30)) * unchecked((long)0xBF58476D1CE4E5B9UL);
        z = (z ^ ShiftRight(z, 27)) * unchecked((long)0x94D049BB133111EBUL);
        z ^= ShiftRight(z, 31);
        var u = (ShiftRight(z, 11) + 1).to_type(ScalarType.Float64) * (1.0 / (1UL << 53));
        return u.log_().neg_();
    }

    /// <summary>A logical right shift of int64 lanes (torch shifts signed values arithmetically).</summary>
    private static Tensor ShiftRight(Tensor z, int bits) => z.bitwise_right_shift(bits).bitwise_and((1L << (64 - bits)) - 1);

    /// <summary>Whether the host sorts this row by weight before drawing (top-k or top-p in effect).</summary>
    private static bool SortsRow(Row r, long vocab) => (r.TopK > 0 && r.TopK < vocab) || r.TopP < 1.0;

    private static int[] ToHost(Tensor ids)
    {
        using var host = ids.to_type(ScalarType.Int32).cpu();
        return host.data<int>().ToArray();
    }
}
