// Turns one row of logits into the next token: greedy, or temperature with
// min-p, top-k and top-p (vLLM's order: min-p on the tempered distribution first). Randomness comes from a counter-based stream keyed by
// (request seed, output index), so a request gives the same tokens whether it
// runs alone, in a batch, or is preempted and recomputed.
namespace Platform.Engine.Sampling;

public sealed class Sampler
{
    private float[] _probs = [];
    private int[] _order = [];

    /// <param name="logits">One row of logits (not modified).</param>
    /// <param name="seed">The request's seed.</param>
    /// <param name="outputIndex">Index of the token being sampled among the request's outputs.</param>
    /// <param name="minP">Tokens less likely than minP × the most likely one are never drawn (0: off).</param>
    public int Sample(ReadOnlySpan<float> logits, double temperature, int topK, double topP, ulong seed, int outputIndex, double minP = 0)
    {
        if (temperature <= 0 || topK == 1) return ArgMax(logits);
        int n = logits.Length;
        if (_probs.Length < n)
        {
            _probs = new float[n];
            _order = new int[n];
        }
        var probs = _probs.AsSpan(0, n);
        var order = _order.AsSpan(0, n);

        float max = float.NegativeInfinity;
        foreach (float l in logits) if (l > max) max = l;
        double invT = 1.0 / temperature;
        for (int i = 0; i < n; i++)
        {
            probs[i] = (float)Math.Exp((logits[i] - max) * invT);
            order[i] = i;
        }
        // The most likely token has weight 1 here, so min-p is a plain threshold on the weights.
        if (minP > 0)
            for (int i = 0; i < n; i++)
                if (probs[i] < minP) probs[i] = 0;

        int keep = n;
        if ((topK > 0 && topK < n) || topP < 1.0)
        {
            // Sort indices by probability, descending; ties by index for determinism.
            var p = _probs;
            order.Sort((a, b) => p[b] != p[a] ? p[b].CompareTo(p[a]) : a.CompareTo(b));
            if (topK > 0 && topK < n) keep = topK;
            if (topP < 1.0)
            {
                double total = 0;
                for (int i = 0; i < keep; i++) total += probs[order[i]];
                double cumulative = 0;
                for (int i = 0; i < keep; i++)
                {
                    cumulative += probs[order[i]] / total;
                    if (cumulative >= topP) { keep = i + 1; break; }
                }
            }
        }

        double sum = 0;
        for (int i = 0; i < keep; i++) sum += probs[order[i]];
        double u = UniformFor(seed, outputIndex) * sum;
        double acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += probs[order[i]];
            if (u < acc) return order[i];
        }
        return order[keep - 1];
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float bestValue = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] > bestValue) { bestValue = logits[i]; best = i; }
        return best;
    }

    /// <summary>Uniform in [0, 1) from (seed, index) by one SplitMix64 round: stateless, so replay-safe.</summary>
    public static double UniformFor(ulong seed, int index)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL * (ulong)(index + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}
