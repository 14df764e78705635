// What a caller submits to the engine.
using Platform.Engine.Scheduling;

namespace Platform.Engine;

/// <param name="ReturnLogits">Attach the logits each output token was sampled from (tests, numerics checks).</param>
/// <param name="GeneratedTokens">Migration: outputs this request already produced elsewhere; the engine continues after them
/// (they count as outputs for max_tokens, sampling and penalties, and prime the detokenizer and stop checker).</param>
public sealed record GenerationRequest(IReadOnlyList<int> PromptTokens, SamplingParams Sampling, string? RequestId = null, bool ReturnLogits = false,
    IReadOnlyList<int>? GeneratedTokens = null);
