// Shared by the KV tier tests: a seeded random prompt, and one greedy 8-token generation with
// its logits (so a run from the tier can be compared with a recomputed one).
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

internal static class KvTierRuns
{
    public static List<int> Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(0, 500)).ToList();
    }

    public static async Task<(List<int> Tokens, List<float[]> Logits, GenerationChunk Last)> Run(LlmEngine engine, IReadOnlyList<int> prompt)
    {
        var tokens = new List<int>();
        var logits = new List<float[]>();
        GenerationChunk? last = null;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 8, Temperature = 0, IgnoreEos = true }, ReturnLogits: true)))
        {
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
            last = chunk;
        }
        return (tokens, logits, last!);
    }
}
