// Samples a step's rows where their logits are (a GPU), so the only copy back to the host is one int32 per row.
// It draws the same token as Sampler for the same logits, seed and output index: the same weights
// (exp((l - max) / T) rounded to fp32, min-p as a threshold on them), the same order (descending, ties by index,
// when top-k or top-p is set; vocabulary order otherwise), the same top-k and top-p cut, and the same uniform
// (Sampler.UniformFor, computed on the host and uploaded with the row's parameters). Sums run in float64 as on the
// host; only their summation order may differ (a parallel scan), which moves a draw only when u lands within
// ~1e-15 of a boundary. Rows that need their logits on the host (logprobs, logit bias, penalties, returned logits)
// are the caller's to exclude: this class sees only logits and sampling parameters.
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
        // Per-row parameters, one upload: 1/T, min-p, top-k (vocab when off), top-p (2 when off), u, sorted?, greedy?.
        var parameters = new double[n * 7];
        for (int i = 0; i < n; i++)
        {
            var r = rows[i];
            var p = parameters.AsSpan(i * 7, 7);
            p[0] = r.Greedy ? 1 : 1.0 / r.Temperature;
            p[1] = r.MinP > 0 ? r.MinP : 0;
            p[2] = r.TopK > 0 && r.TopK < vocab ? r.TopK : vocab;
            p[3] = r.TopP < 1.0 ? r.TopP : 2;
            p[4] = Sampler.UniformFor(r.Seed, r.OutputIndex);
            p[5] = SortsRow(r, vocab) ? 1 : 0;
            p[6] = r.Greedy ? 1 : 0;
        }
        var table = tensor(parameters, [n, 7], ScalarType.Float64).to(device);
        var invT = table[.., 0..1];
        var minP = table[.., 1..2];
        var topK = table[.., 2..3];
        var topP = table[.., 3..4];
        var u = table[.., 4..5];
        var sorts = table[.., 5..6].to_type(ScalarType.Bool);
        var greedy = table[.., 6].to_type(ScalarType.Bool);

        // Weights as the host makes them: float64 arithmetic, stored as fp32; the most likely token weighs 1.
        // The host subtracts the max in fp32 and scales in float64.
        var l32 = logits.to_type(ScalarType.Float32);
        var difference = (l32 - l32.amax([1], keepdim: true)).to_type(ScalarType.Float64);
        var weights = (difference * invT).exp_().to_type(ScalarType.Float32);
        weights = weights.masked_fill(weights.to_type(ScalarType.Float64) < minP, 0f);

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
            values = weights.to_type(ScalarType.Float64);
        }
        // Top-k keeps the first k positions; top-p keeps a position while the share before it is below p.
        var inTopK = positions < topK;
        var kept = values.masked_fill(inTopK.logical_not(), 0.0);
        var shareBefore = (kept.cumsum(1) - kept) / kept.sum(1, keepdim: true);
        var keep = inTopK.logical_and_(shareBefore < topP);
        kept = values.masked_fill(keep.logical_not(), 0.0);
        var keepCount = keep.sum(1, keepdim: true, type: ScalarType.Int64);

        // The first position whose running sum passes u × total; the last kept position if rounding runs past it.
        var running = kept.cumsum(1);
        var target = u * running[.., (int)(vocab - 1)..(int)vocab];
        var pick = searchsorted(running, target, right: true).minimum(keepCount - 1).clamp_min(0);
        var sampled = order.gather(1, pick).squeeze(1);
        return ToHost(where(greedy, argmax, sampled));
    }

    /// <summary>Whether the host sorts this row by weight before drawing (top-k or top-p in effect).</summary>
    private static bool SortsRow(Row r, long vocab) => (r.TopK > 0 && r.TopK < vocab) || r.TopP < 1.0;

    private static int[] ToHost(Tensor ids)
    {
        using var host = ids.to_type(ScalarType.Int32).cpu();
        return host.data<int>().ToArray();
    }
}
