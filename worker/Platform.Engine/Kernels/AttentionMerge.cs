// Exact merge of partial attention results (DistAttention, after Infinite-LLM):
// attention over a context split into disjoint groups of KV (held by different
// workers) equals the merge of each group's partial output o_i and log-sum-exp
// l_i: out = Σ_i e^(l_i − m) o_i / Σ_i e^(l_i − m), m = max_i l_i. Only the
// query travels to a group's holder, and only (o_i, l_i) come back.
namespace Platform.Engine.Kernels;

public static class AttentionMerge
{
    /// <summary>
    /// Merges <paramref name="parts"/> partials of <paramref name="heads"/> heads into <paramref name="output"/> ([heads, headDim]).
    /// outputs[i] is [heads, headDim], logSumExps[i] is [heads]; a part with log-sum-exp −∞ (no keys) contributes nothing.
    /// The merged log-sum-exp per head goes to <paramref name="mergedLogSumExp"/> when given, so merges can nest.
    /// </summary>
    public static void Merge(IReadOnlyList<float[]> outputs, IReadOnlyList<float[]> logSumExps, int heads, int headDim,
        Span<float> output, Span<float> mergedLogSumExp = default)
    {
        if (outputs.Count != logSumExps.Count) throw new ArgumentException("one log-sum-exp array per partial output");
        if (output.Length != heads * headDim) throw new ArgumentException($"output must hold {heads}×{headDim} values");
        MergeRow(outputs, logSumExps, 0, heads, headDim, output, mergedLogSumExp);
    }

    /// <summary>
    /// Row by row for <paramref name="rows"/> queries: outputs[i] is [rows, heads, headDim] and
    /// logSumExps[i] is [rows, heads]; <paramref name="output"/> receives [rows, heads, headDim].
    /// </summary>
    public static void MergeRows(IReadOnlyList<float[]> outputs, IReadOnlyList<float[]> logSumExps, int rows, int heads, int headDim, Span<float> output)
    {
        if (outputs.Count != logSumExps.Count) throw new ArgumentException("one log-sum-exp array per partial output");
        if (output.Length != rows * heads * headDim) throw new ArgumentException($"output must hold {rows}×{heads}×{headDim} values");
        for (int r = 0; r < rows; r++)
            MergeRow(outputs, logSumExps, r, heads, headDim, output.Slice(r * heads * headDim, heads * headDim), default);
    }

    /// <summary>
    /// The same merge over partials laid out one after another, as the flash-decoding split of
    /// <see cref="PagedAttention"/> writes them: <paramref name="outputs"/> is [parts, heads, headDim] and
    /// <paramref name="logSumExps"/> is [parts, heads]. Allocates nothing; safe to call from several threads on
    /// disjoint outputs.
    /// </summary>
    public static void MergeContiguous(ReadOnlySpan<float> outputs, ReadOnlySpan<float> logSumExps, int parts, int heads, int headDim,
        Span<float> output, Span<float> mergedLogSumExp = default)
    {
        if (outputs.Length != parts * heads * headDim || logSumExps.Length != parts * heads)
            throw new ArgumentException($"expected {parts}×{heads}×{headDim} outputs and {parts}×{heads} log-sum-exps");
        if (output.Length != heads * headDim) throw new ArgumentException($"output must hold {heads}×{headDim} values");
        output.Clear();
        for (int h = 0; h < heads; h++)
        {
            float max = float.NegativeInfinity;
            for (int i = 0; i < parts; i++) max = Math.Max(max, logSumExps[i * heads + h]);
            if (!mergedLogSumExp.IsEmpty) mergedLogSumExp[h] = max;
            if (float.IsNegativeInfinity(max)) continue;   // no keys anywhere: output stays 0
            double total = 0;
            var o = output.Slice(h * headDim, headDim);
            for (int i = 0; i < parts; i++)
            {
                double w = Math.Exp(logSumExps[i * heads + h] - max);
                if (w == 0) continue;
                total += w;
                var part = outputs.Slice((i * heads + h) * headDim, headDim);
                for (int j = 0; j < headDim; j++) o[j] += (float)(w * part[j]);
            }
            float inv = (float)(1.0 / total);
            for (int j = 0; j < headDim; j++) o[j] *= inv;
            if (!mergedLogSumExp.IsEmpty) mergedLogSumExp[h] = max + (float)Math.Log(total);
        }
    }

    private static void MergeRow(IReadOnlyList<float[]> outputs, IReadOnlyList<float[]> logSumExps, int row, int heads, int headDim,
        Span<float> output, Span<float> mergedLogSumExp)
    {
        output.Clear();
        int lseBase = row * heads, outBase = row * heads * headDim;
        for (int h = 0; h < heads; h++)
        {
            float max = float.NegativeInfinity;
            foreach (var l in logSumExps) max = Math.Max(max, l[lseBase + h]);
            if (!mergedLogSumExp.IsEmpty) mergedLogSumExp[h] = max;
            if (float.IsNegativeInfinity(max)) continue;   // no keys anywhere: output stays 0
            double total = 0;
            var o = output.Slice(h * headDim, headDim);
            for (int i = 0; i < outputs.Count; i++)
            {
                double w = Math.Exp(logSumExps[i][lseBase + h] - max);
                if (w == 0) continue;
                total += w;
                var part = outputs[i].AsSpan(outBase + h * headDim, headDim);
                for (int j = 0; j < headDim; j++) o[j] += (float)(w * part[j]);
            }
            float inv = (float)(1.0 / total);
            for (int j = 0; j < headDim; j++) o[j] *= inv;
            if (!mergedLogSumExp.IsEmpty) mergedLogSumExp[h] = max + (float)Math.Log(total);
        }
    }
}
