// Log-probabilities of one sampled token, for requests that ask for them (OpenAI's logprobs and
// top_logprobs). As vLLM's default (--logprobs-mode raw_logprobs), they come from the model's raw
// logits: a log-softmax over the whole vocabulary before logit_bias, the penalties, temperature,
// min-p, top-k and top-p. So they describe the model, not the sampler's reshaped distribution, and
// a greedy token is always the most likely one. One pass finds the maximum, one sums exp in double
// (the log-sum-exp), and one keeps the k best in a small sorted array (k ≤ MaxTopLogprobs = 20), so
// the cost is a few passes over one row, paid only by requests that ask.
namespace Platform.Engine.Sampling;

/// <summary>The sampled token's log-probability and the most likely tokens with theirs, best first (ties: lower id first).</summary>
public sealed record TokenLogprobs(float Logprob, IReadOnlyList<int> TopTokenIds, IReadOnlyList<float> TopLogprobs)
{
    /// <summary>The most alternatives a request may ask for (vLLM's default max_logprobs, OpenAI's top_logprobs bound).</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>Log-softmax of <paramref name="logits"/> at <paramref name="token"/>, plus the <paramref name="top"/> best tokens.</summary>
    public static TokenLogprobs Compute(ReadOnlySpan<float> logits, int token, int top)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(top);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(top, MaxTopLogprobs);
        if ((uint)token >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(token));
        float max = float.NegativeInfinity;
        foreach (float l in logits) if (l > max) max = l;
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp((double)l - max);
        double logSumExp = max + Math.Log(sum);

        top = Math.Min(top, logits.Length);
        var ids = new int[top];
        var values = new float[top];
        int kept = 0;
        for (int i = 0; i < logits.Length && top > 0; i++)
        {
            float l = logits[i];
            // Strictly greater than the worst kept value: an equal logit at a higher id never displaces a kept one.
            if (kept == top && !(l > values[kept - 1])) continue;
            int at = kept == top ? kept - 1 : kept++;
            while (at > 0 && l > values[at - 1])
            {
                values[at] = values[at - 1];
                ids[at] = ids[at - 1];
                at--;
            }
            values[at] = l;
            ids[at] = i;
        }
        var logprobs = new float[top];
        for (int i = 0; i < top; i++) logprobs[i] = (float)(values[i] - logSumExp);
        return new TokenLogprobs((float)(logits[token] - logSumExp), ids, logprobs);
    }
}
