// Turns one row of logits into the next token: greedy, or temperature with
// min-p, top-k and top-p (vLLM's order: min-p on the tempered distribution first). Randomness comes from a counter-based stream keyed by
// (request seed, output index, token id), so a request gives the same tokens whether it
// runs alone, in a batch, or is preempted and recomputed.
//
// The draw is an exponential race, as vLLM's sampler does it: every kept token i gets E_i ~ Exp(1) and the token with the
// largest w_i / E_i wins, which picks i with probability w_i / Σw. Unlike walking the cumulative sum to a uniform, it depends
// only on how the two best candidates compare, not on a sum over the whole vocabulary: a recomputed row whose logits moved
// by float rounding (a migrated request re-prefills what another worker decoded) changes the draw only when those two
// are within that rounding of each other, not whenever the thousands of weights before the drawn one shift the sum past u.
using Platform.Core.Hashing;

namespace Platform.Engine.Sampling;

public sealed class Sampler
{
    private float[] _probs = [];
    private int[] _order = [];
    private readonly SortedHead _head = new();

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
        for (int i = 0; i < n; i++) probs[i] = (float)Math.Exp((logits[i] - max) * invT);
        // The most likely token has weight 1 here, so min-p is a plain threshold on the weights.
        if (minP > 0)
            for (int i = 0; i < n; i++)
                if (probs[i] < minP) probs[i] = 0;

        bool cut = (topK > 0 && topK < n) || topP < 1.0;
        int keep = cut ? _head.Cut(probs, topK > 0 && topK < n ? topK : 0, topP, order) : n;

        ulong key = StepKey(seed, outputIndex);
        var race = new Race();
        if (cut)
            for (int i = 0; i < keep; i++) race.Enter(order[i], probs[order[i]], key);
        else
            for (int i = 0; i < n; i++) race.Enter(i, probs[i], key);
        return race.Winner;
    }

    /// <summary>
    /// The exponential race over the tokens entered: the largest weight / E wins (ties: the lower token id). E is only
    /// computed where it could win: E ≥ 1 - u for the uniform u behind it, so a token with weight / (1 - u) at or below
    /// the best so far cannot, and most of a vocabulary skips the logarithm.
    /// </summary>
    private struct Race
    {
        private double _best;
        private int _winner;

        public readonly int Winner => _winner;

        public void Enter(int token, float weight, ulong key)
        {
            if (weight <= 0) return;
            double u = Uniform(key, token);     // in (0, 1]
            // E = -log u ≥ 1 - u (exact in double), with room for the logarithm's rounding: weight / E < best.
            if (weight < _best * (1.0 - u) * (1 - 1e-12)) return;
            double e = -Math.Log(u);
            double score = e > 0 ? weight / e : double.PositiveInfinity;
            if (score > _best || (score == _best && token < _winner))
            {
                _best = score;
                _winner = token;
            }
        }
    }

    /// <summary>The key of one draw: output <paramref name="outputIndex"/> of the SplitMix64 stream of the request's seed.</summary>
    public static ulong StepKey(ulong seed, int outputIndex) => SplitMix64.At(seed, outputIndex);

    /// <summary>Uniform in (0, 1] for one token of one draw, from 53 bits of the draw key's stream: stateless, so replay-safe.</summary>
    public static double Uniform(ulong stepKey, int token) => ((SplitMix64.At(stepKey, token) >> 11) + 1) * (1.0 / (1UL << 53));

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float bestValue = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] > bestValue) { bestValue = logits[i]; best = i; }
        return best;
    }
}
