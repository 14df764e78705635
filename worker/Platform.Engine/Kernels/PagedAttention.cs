// Decode attention straight over the paged KV cache: one query token per
// sequence, keys and values read in place from their slots (no gather copy),
// grouped-query heads served from one read of each key/value row.
//
// Why: the libtorch path gathers each sequence's K and V into new tensors and
// runs attention per sequence, ~10 native calls per sequence per layer; at batch
// 32 that per-call cost, not bandwidth, dominated decode. Here one call covers
// every decode sequence of a layer; work is split into (sequence, KV head)
// chunks over both cores through KernelPool.
//
// Per chunk, two passes: scores q·k for the G query heads of the KV head over
// the whole context (kept in a per-thread scratch buffer), a max-subtracted
// softmax, then the probability-weighted sum of V rows. Each K and V row is read
// once per chunk whatever G is. float32 throughout; exp is vectorised (see Exp).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe class PagedAttention
{
    [ThreadStatic] private static float[]? _scores;

    private struct Job
    {
        public float* Query;          // [seqs, heads, headDim]
        public float* Keys;           // [slots, kvHeads, headDim]
        public float* Values;         // [slots, kvHeads, headDim]
        public long* Slots;           // concatenated context slots of every sequence
        public int* SlotOffsets;      // start of each sequence's slots in Slots
        public int* ContextLengths;
        public float* Output;         // [seqs, heads, headDim]
        public float* LogSumExp;      // [seqs, heads] or null
        public int Heads, KvHeads, HeadDim;
        public float Scale;
    }

    /// <summary>
    /// output[s, h] = softmax(q[s, h] · K[slots of s, h / G] · scale) · V[slots of s, h / G] for every
    /// decode sequence s and query head h (G = heads / kvHeads). Call from one thread at a time.
    /// </summary>
    public static void Decode(float* query, float* keys, float* values, long* slots, int* slotOffsets, int* contextLengths,
        int sequences, int heads, int kvHeads, int headDim, float scale, float* output) =>
        DecodePartial(query, keys, values, slots, slotOffsets, contextLengths, sequences, heads, kvHeads, headDim, scale, output, null);

    /// <summary>
    /// As <see cref="Decode"/>, over whatever subset of a sequence's KV the slots name, and also writes
    /// each head's log-sum-exp of the scaled scores (−∞ for an empty subset, whose output is 0). Partial
    /// results over disjoint subsets merge exactly with <see cref="AttentionMerge"/>: the DistAttention
    /// contract, where each worker attends over the blocks it holds.
    /// </summary>
    public static void DecodePartial(float* query, float* keys, float* values, long* slots, int* slotOffsets, int* contextLengths,
        int sequences, int heads, int kvHeads, int headDim, float scale, float* output, float* logSumExp)
    {
        if (sequences <= 0) return;
        if (heads % kvHeads != 0) throw new ArgumentException($"heads ({heads}) must be a multiple of kvHeads ({kvHeads})");
        var job = new Job
        {
            Query = query, Keys = keys, Values = values, Slots = slots, SlotOffsets = slotOffsets, ContextLengths = contextLengths,
            Output = output, LogSumExp = logSumExp, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Scale = scale,
        };
        KernelPool.Run(&RunChunk, &job, sequences * kvHeads, KernelThreads.Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunChunk(void* context, int chunk)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        int seq = chunk / job.KvHeads, kvHead = chunk % job.KvHeads;
        int groups = job.Heads / job.KvHeads, d = job.HeadDim, length = job.ContextLengths[seq];
        long* slots = job.Slots + job.SlotOffsets[seq];
        float* q = job.Query + ((long)seq * job.Heads + kvHead * groups) * d;
        float* o = job.Output + ((long)seq * job.Heads + kvHead * groups) * d;
        long rowStride = (long)job.KvHeads * d;

        int needed = length * groups;
        var scratch = _scores;
        if (scratch is null || scratch.Length < needed) _scores = scratch = new float[Math.Max(needed, 4096)];
        fixed (float* scores = scratch)
        {
            // Pass 1: scores[g * length + p] = q_g · k_p · scale.
            for (int p = 0; p < length; p++)
            {
                float* k = job.Keys + slots[p] * rowStride + (long)kvHead * d;
                for (int g = 0; g < groups; g++) scores[g * length + p] = Dot(q + g * d, k, d) * job.Scale;
            }
            // Softmax per query head.
            for (int g = 0; g < groups; g++)
            {
                float lse = length == 0 ? float.NegativeInfinity : Softmax(scores + g * length, length);
                if (job.LogSumExp != null) job.LogSumExp[(long)seq * job.Heads + kvHead * groups + g] = lse;
                new Span<float>(o + g * d, d).Clear();
            }
            // Pass 2: o_g += p_g(p) · v_p.
            for (int p = 0; p < length; p++)
            {
                float* v = job.Values + slots[p] * rowStride + (long)kvHead * d;
                for (int g = 0; g < groups; g++) Axpy(scores[g * length + p], v, o + g * d, d);
            }
        }
    }

    /// <summary>In-place softmax, returning the log-sum-exp; the exponentials are vectorised (an exp per score per head per layer dominated the kernel with MathF.Exp).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Softmax(float* s, int n)
    {
        float max = float.NegativeInfinity;
        for (int p = 0; p < n; p++) if (s[p] > max) max = s[p];
        float sum = 0;
        int i = 0;
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            var vmax = Vector256.Create(max);
            var vsum = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                var e = Exp(Avx.LoadVector256(s + i) - vmax);
                Avx.Store(s + i, e);
                vsum += e;
            }
            sum = Vector256.Sum(vsum);
        }
        for (; i < n; i++) { s[i] = MathF.Exp(s[i] - max); sum += s[i]; }
        float inv = 1f / sum;
        for (int p = 0; p < n; p++) s[p] *= inv;
        return max + MathF.Log(sum);
    }

    /// <summary>
    /// e^x for x ≤ 0 (softmax arguments): 2^n · e^r with n = round(x·log2 e), |r| ≤ ln2/2, and e^r
    /// by its Taylor series to r⁶ (truncation error below 1.3e-7 relative). Below −87 it underflows to ~0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp(Vector256<float> x)
    {
        x = Avx.Max(x, Vector256.Create(-87.0f));
        var n = Avx.RoundToNearestInteger(x * Vector256.Create(1.44269504f));
        // r = x − n·ln2, with ln2 split in two for precision.
        var r = Fma.MultiplyAddNegated(n, Vector256.Create(0.693145752f), x);
        r = Fma.MultiplyAddNegated(n, Vector256.Create(1.42860677e-6f), r);
        var p = Vector256.Create(1.0f / 720);
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.0f / 120));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.0f / 24));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.0f / 6));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(0.5f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.0f));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1.0f));
        var scale = Avx2.ShiftLeftLogical(Avx.ConvertToVector256Int32(n) + Vector256.Create(127), 23).AsSingle();
        return p * scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0;
        if (Avx2.IsSupported && Fma.IsSupported && n >= 16)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                acc0 = Fma.MultiplyAdd(Avx.LoadVector256(a + i), Avx.LoadVector256(b + i), acc0);
                acc1 = Fma.MultiplyAdd(Avx.LoadVector256(a + i + 8), Avx.LoadVector256(b + i + 8), acc1);
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy(float alpha, float* x, float* y, int n)
    {
        int i = 0;
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            var a = Vector256.Create(alpha);
            for (; i + 8 <= n; i += 8)
                Avx.Store(y + i, Fma.MultiplyAdd(a, Avx.LoadVector256(x + i), Avx.LoadVector256(y + i)));
        }
        for (; i < n; i++) y[i] += alpha * x[i];
    }
}
