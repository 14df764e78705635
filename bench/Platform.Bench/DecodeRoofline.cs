// The ceiling `bench engine` sets each decode cell against: a roofline over what a step must do.
// A step of B sequences reads every weight once (the embedding is a row lookup) and the K/V rows it
// attends over, and does 2 FLOPs per weight and 4·layers·heads·head_dim FLOPs per context token for
// each sequence. The bench's batch cells are B requests over one shared context with a distinct last
// block each (SCBench's shared-context shape), and the decode kernel reads shared rows once for all
// of them (PagedAttention.PlanGroups), so the shared context's bytes count once and its FLOPs B times.
// The ceiling is B over the larger of the two times: bytes at the streaming read, FLOPs at the FMA
// peak. An earlier bound counted the bytes of B separate contexts and no FLOPs; for shared cells that
// is no ceiling at all (a low probe put 32K batch 8 at 119 % of it).
using Platform.Core.Models;

namespace Platform.Bench;

internal static class DecodeRoofline
{
    /// <summary>Tokens at the end of each batch request's prompt that are its own (the rest is the shared context).</summary>
    public const int DistinctTail = 16;

    /// <summary>Context tokens whose K/V rows a step reads: the shared part once, each request's own tail once each.</summary>
    public static long KvTokensRead(int context, int batch) =>
        Math.Max(0, context - DistinctTail) + (long)batch * Math.Min(context, DistinctTail);

    /// <summary>Weights of one decoder layer: the fused qkv, o, and gate/up/down projections.</summary>
    public static long LayerParameters(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        return h * (q + 2 * kv) + q * h + 3 * h * c.IntermediateSize;
    }

    /// <summary>Weights read per decode step: every projection and the output head (fp32; the embedding is a row lookup).</summary>
    public static long WeightParameters(ModelConfig c) => c.NumLayers * LayerParameters(c) + (long)c.VocabSize * c.HiddenSize;

    /// <summary>Bytes a step of <paramref name="batch"/> sequences over the cell's context must read (fp32 weights and KV).</summary>
    public static long StepBytes(ModelConfig c, int context, int batch) =>
        4 * WeightParameters(c) + KvTokensRead(context, batch) * 2L * c.NumLayers * c.NumKvHeads * c.HeadDim * 4;

    /// <summary>FLOPs of that step: 2 per weight per sequence, and QKᵀ plus P·V over each sequence's whole context.</summary>
    public static double StepFlops(ModelConfig c, int context, int batch) =>
        batch * (2.0 * WeightParameters(c) + 4.0 * c.NumLayers * c.NumHeads * c.HeadDim * context);

    /// <summary>
    /// Tokens/s of a step that only had to read its bytes at <paramref name="gbps"/> and do its FLOPs at <paramref name="gflops"/>,
    /// and which of the two sets it: "memory" or "FMA".
    /// </summary>
    public static (double TokensPerSecond, string LimitedBy) Ceiling(int batch, long stepBytes, double stepFlops, double gbps, double gflops)
    {
        double reading = stepBytes / (gbps * 1e9), computing = stepFlops / (gflops * 1e9);
        return (batch / Math.Max(reading, computing), reading >= computing ? "memory" : "FMA");
    }
}
