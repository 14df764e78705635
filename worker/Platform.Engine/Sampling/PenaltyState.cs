// The penalties OpenAI and vLLM define over what a sequence already holds, applied to one row of
// logits before temperature (vLLM's order): repetition_penalty over every token seen in the
// prompt or the output (a positive logit divided by it, a negative one multiplied), then
// frequency_penalty × (times the token was generated) and presence_penalty (once, if it was)
// subtracted. The seen set and output counts are kept per request and caught up incrementally,
// so a step costs O(new tokens), not O(context), even for a million-token prompt.
namespace Platform.Engine.Sampling;

public sealed class PenaltyState
{
    private readonly HashSet<int> _seen;
    private readonly Dictionary<int, int> _outputCounts = [];
    private readonly int _promptLength;
    private int _consumed;

    /// <param name="tokens">The sequence so far: prompt, then outputs.</param>
    public PenaltyState(IReadOnlyList<int> tokens, int promptLength)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        _promptLength = promptLength;
        _seen = new HashSet<int>(promptLength);
        for (; _consumed < promptLength; _consumed++) _seen.Add(tokens[_consumed]);
    }

    public static bool Needed(double presence, double frequency, double repetition) => presence != 0 || frequency != 0 || repetition != 1;

    /// <summary>Penalises <paramref name="logits"/> in place for the sequence <paramref name="tokens"/> (prompt, then outputs).</summary>
    public void Apply(Span<float> logits, IReadOnlyList<int> tokens, double presence, double frequency, double repetition)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        for (; _consumed < tokens.Count; _consumed++)
        {
            int t = tokens[_consumed];
            _seen.Add(t);
            if (_consumed >= _promptLength) _outputCounts[t] = _outputCounts.GetValueOrDefault(t) + 1;
        }
        if (repetition != 1)
        {
            float r = (float)repetition;
            foreach (int t in _seen)
                if ((uint)t < (uint)logits.Length) logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
        }
        if (presence != 0 || frequency != 0)
        {
            foreach (var (t, count) in _outputCounts)
                if ((uint)t < (uint)logits.Length) logits[t] -= (float)(frequency * count + presence);
        }
    }
}
