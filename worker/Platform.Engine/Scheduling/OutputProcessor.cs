// Turns one request's sampled tokens into streamed text and decides when it
// stops, as vLLM keeps it in its detokenizer: an incremental detokenizer plus a
// stop checker, one per request, run on the engine thread after sampling.
// Stop order for each token: a stop token (EOS unless ignored, stop ids) ends
// the request without its text; then a stop string in the decoded text ends it
// with the text before the string; then max_tokens or the context limit ends it
// with everything decoded. Text that may be the start of a stop string is held
// back (up to the longest stop string less one character) until it cannot be.
using Platform.Core.Tokenization;

namespace Platform.Engine.Scheduling;

public sealed class OutputProcessor(SamplingParams sampling, IReadOnlySet<int> eosTokens, IncrementalDecoder? decoder)
{
    private readonly int _hold = sampling.StopStrings.Count == 0 ? 0 : sampling.StopStrings.Max(s => s.Length) - 1;
    /// <summary>Decoded text withheld because it may be the start of a stop string.</summary>
    private string _pending = "";

    /// <summary>
    /// Takes the request's newest token (already appended: <paramref name="outputLength"/> and
    /// <paramref name="totalTokens"/> count it) and returns the text to stream now and, when the
    /// request ends with it, why.
    /// </summary>
    public (string Text, FinishReason? Finish) Process(int token, int outputLength, int totalTokens, int maxTotalTokens)
    {
        FinishReason? finish = null;
        bool stopToken = (!sampling.IgnoreEos && eosTokens.Contains(token)) || sampling.StopTokenIds.Contains(token);
        string text = "";
        if (stopToken) finish = FinishReason.Stop;
        else if (decoder is not null)
        {
            _pending += decoder.Push(token);
            if (sampling.StopStrings.Count > 0 && FindStop(_pending, sampling.StopStrings) is int cut and >= 0)
            {
                text = _pending[..cut];
                _pending = "";
                finish = FinishReason.Stop;
            }
        }
        if (finish is null && (outputLength >= sampling.MaxTokens || totalTokens >= maxTotalTokens)) finish = FinishReason.Length;

        if (finish is null)
        {
            int release = Math.Max(0, _pending.Length - _hold);
            // Never split a surrogate pair between chunks.
            if (release > 0 && release < _pending.Length && char.IsHighSurrogate(_pending[release - 1])) release--;
            text = _pending[..release];
            _pending = _pending[release..];
        }
        else if (finish == FinishReason.Length || (stopToken && decoder is not null))
        {
            text = _pending + (decoder?.Flush() ?? "");
            _pending = "";
        }
        return (text, finish);
    }

    /// <summary>
    /// Replays outputs another worker already produced and streamed (a migrated request): the decoder and the
    /// held-back text end up exactly as that worker's did, so the next token's text continues the client's.
    /// Throws <see cref="EngineRequestException"/> when those outputs already end the request.
    /// </summary>
    public void Prime(IReadOnlyList<int> generated, int promptLength, int maxTotalTokens)
    {
        ArgumentNullException.ThrowIfNull(generated);
        for (int i = 0; i < generated.Count; i++)
        {
            var (_, finish) = Process(generated[i], i + 1, promptLength + i + 1, maxTotalTokens);
            if (finish is not null)
                throw new EngineRequestException($"the generated tokens already end the request at output {i + 1} ({finish}); there is nothing to continue.");
        }
    }

    private static int FindStop(string text, IReadOnlyList<string> stops)
    {
        int best = -1;
        foreach (var s in stops)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        return best;
    }
}
