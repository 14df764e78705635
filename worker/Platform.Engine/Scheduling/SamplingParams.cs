// What the caller asks of one generation: length, randomness and when to stop.
// Validate() rejects values that would make sampling meaningless (NaN, negative),
// with messages the router passes on as 400s.
namespace Platform.Engine.Scheduling;

public sealed record SamplingParams
{
    public int MaxTokens { get; init; } = 16;
    /// <summary>0 means greedy.</summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>0 means no top-k cut.</summary>
    public int TopK { get; init; }
    public double TopP { get; init; } = 1.0;
    /// <summary>Drop tokens less likely than MinP × the most likely one (after temperature); 0 disables it.</summary>
    public double MinP { get; init; }
    /// <summary>Subtracted once from the logit of every token already generated ([-2, 2]).</summary>
    public double PresencePenalty { get; init; }
    /// <summary>Subtracted per generation of a token from its logit ([-2, 2]).</summary>
    public double FrequencyPenalty { get; init; }
    /// <summary>Divides positive and multiplies negative logits of tokens in the prompt or output (1: off).</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Added to these tokens' logits before penalties and sampling (OpenAI's logit_bias, [-100, 100]).</summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();
    /// <summary>Seed for reproducible sampling; null draws one at admission.</summary>
    public ulong? Seed { get; init; }
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Keep going past the model's end-of-sequence tokens.</summary>
    public bool IgnoreEos { get; init; }
    /// <summary>
    /// Log-probabilities of each sampled token plus this many most likely alternatives (0..20), from the raw
    /// logits (<see cref="Sampling.TokenLogprobs"/>); null: none computed, at no cost.
    /// </summary>
    public int? Logprobs { get; init; }

    public static readonly SamplingParams Greedy = new() { Temperature = 0 };

    public void Validate()
    {
        if (MaxTokens < 1) throw new EngineRequestException($"max_tokens must be at least 1, got {MaxTokens}.");
        if (double.IsNaN(Temperature) || double.IsInfinity(Temperature) || Temperature < 0)
            throw new EngineRequestException($"temperature must be a finite number >= 0, got {Temperature}.");
        if (TopK < 0) throw new EngineRequestException($"top_k must be >= 0 (0 disables it), got {TopK}.");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1) throw new EngineRequestException($"top_p must be in (0, 1], got {TopP}.");
        if (double.IsNaN(MinP) || MinP < 0 || MinP > 1) throw new EngineRequestException($"min_p must be in [0, 1], got {MinP}.");
        if (!(PresencePenalty is >= -2 and <= 2)) throw new EngineRequestException($"presence_penalty must be in [-2, 2], got {PresencePenalty}.");
        if (!(FrequencyPenalty is >= -2 and <= 2)) throw new EngineRequestException($"frequency_penalty must be in [-2, 2], got {FrequencyPenalty}.");
        foreach (var (token, bias) in LogitBias)
            if (token < 0 || !(bias is >= -100 and <= 100)) throw new EngineRequestException($"logit_bias must map token ids to values in [-100, 100], got {token}: {bias}.");
        if (!(RepetitionPenalty is > 0 and <= 10)) throw new EngineRequestException($"repetition_penalty must be in (0, 10], got {RepetitionPenalty}.");
        if (Logprobs is < 0 or > Sampling.TokenLogprobs.MaxTopLogprobs)
            throw new EngineRequestException($"logprobs must be between 0 and {Sampling.TokenLogprobs.MaxTopLogprobs}, got {Logprobs}.");
        foreach (var s in StopStrings)
            if (string.IsNullOrEmpty(s)) throw new EngineRequestException("stop strings must not be empty.");
    }
}

/// <summary>A request the engine cannot serve as asked (maps to HTTP 400): the message says what to change.</summary>
public sealed class EngineRequestException(string message) : Exception(message);
