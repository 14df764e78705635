// One model step over several sequences' slices, every new row's logits held to the float64
// reference: the check the numerics and sliding-window tests make after each step they build.
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using TorchSharp;

namespace Platform.Engine.Tests;

/// <summary>One sequence of a test: its tokens (prompt and the tokens fed while decoding), KV blocks and reference logits.</summary>
internal sealed record ReferenceSequence(List<int> Tokens, int[] Blocks, double[][] Expected);

internal static class ReferenceSteps
{
    /// <summary>Runs one step over the given (sequence, start, count) slices and checks every row's logits.</summary>
    public static void Step(LlamaModel model, PagedKvStore kv, DecodePath path, string what, params (ReferenceSequence Seq, int Start, int Count)[] slices) =>
        Step(model, kv, path, what, 1e-4, slices);

    public static void Step(LlamaModel model, PagedKvStore kv, DecodePath path, string what, double tolerance,
        params (ReferenceSequence Seq, int Start, int Count)[] slices)
    {
        var batch = new ForwardBatch();
        foreach (var (seq, start, count) in slices) batch.AddSequence(seq.Tokens, start, count, seq.Blocks, kv.BlockSize);
        batch.LogitRows.AddRange(Enumerable.Range(0, batch.NumTokens));
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var logits = model.Forward(batch, kv).data<float>().ToArray();
        int vocab = model.Config.VocabSize, row = 0;
        foreach (var (seq, start, count) in slices)
            for (int p = start; p < start + count; p++, row++)
                NumericsTests.AssertClose(seq.Expected[p], logits.AsSpan(row * vocab, vocab), $"{model.Config.ModelType} {path} {what} position {p}", tolerance);
    }
}
