// One batch-1 greedy generation on the engine, measured the way the peers measure themselves: the
// time from submitting the prompt to the first generated id, and the rate of the ids after the first
// over the time they took. Returns the ids too, for the greedy-agreement check against a peer; and
// the engine's side of the teacher-forced agreement check (TopIds).
using System.Diagnostics;
using Platform.Engine;
using Platform.Engine.Model;
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;

namespace Platform.Bench.Peers;

internal sealed record EngineDecodeResult(IReadOnlyList<int> Ids, double FirstTokenMs, double DecodeTokensPerSecond);

internal static class EngineDecode
{
    public static async Task<EngineDecodeResult> RunAsync(LlmEngine engine, IReadOnlyList<int> prompt, int tokens)
    {
        var sampling = new SamplingParams { MaxTokens = tokens, Temperature = 0, IgnoreEos = true };
        var ids = new List<int>();
        double firstMs = 0;
        var clock = Stopwatch.StartNew();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest([.. prompt], sampling)))
        {
            if (chunk.Error is { } error) throw new InvalidOperationException(error);
            if (chunk.TokenIds.Count == 0) continue;  // a progress chunk
            if (ids.Count == 0) firstMs = clock.Elapsed.TotalMilliseconds;
            ids.AddRange(chunk.TokenIds);
        }
        double decodeSeconds = clock.Elapsed.TotalMilliseconds / 1000 - firstMs / 1000;
        return new EngineDecodeResult(ids, firstMs, (ids.Count - 1) / decodeSeconds);
    }

    /// <summary>
    /// Teacher forcing on the engine's model: one forward pass over <paramref name="ids"/> (LogitsDump) and the top id after
    /// each prefix, as <see cref="LlamaCppPeer.ScoreAsync"/> returns for llama.cpp.
    /// </summary>
    public static IReadOnlyList<int> TopIds(string modelDir, IReadOnlyList<int> ids, string weightDtype, string quantization)
    {
        var logits = LogitsDump.Compute(modelDir, ids, TorchSharp.torch.ScalarType.Float32, weightDtype, quantization);
        int vocab = logits.Length / ids.Count;
        var top = new int[ids.Count];
        for (int i = 0; i < ids.Count; i++)
            top[i] = Sampler.ArgMax(logits.AsSpan(i * vocab, vocab)); // the engine's greedy pick: the first of equal maxima, as the driver's Argmax
        return top;
    }

    /// <summary>How many ids agree from the start before the first difference.</summary>
    public static int AgreeingPrefix(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        int n = 0;
        while (n < a.Count && n < b.Count && a[n] == b[n]) n++;
        return n;
    }
}
