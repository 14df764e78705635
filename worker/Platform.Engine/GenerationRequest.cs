// What a caller submits to the engine.
using Platform.Engine.Scheduling;

namespace Platform.Engine;

/// <param name="ReturnLogits">Attach the logits each output token was sampled from (tests, numerics checks).</param>
public sealed record GenerationRequest(IReadOnlyList<int> PromptTokens, SamplingParams Sampling, string? RequestId = null, bool ReturnLogits = false);
