// Prefill attention straight over the paged KV pools, tiled with an online
// softmax (the flash-attention scheme): a chunk of queries of one sequence
// attends to the keys 0 .. its last position, read in place from their slots.
//
// Why: the libtorch path gathers the whole context of a sequence into new K and
// V tensors, builds a [queries × heads/kvHeads, context] mask, and lets SDPA
// materialise scores of the same size: O(chunk × context) memory per layer and
// several full passes over it. Here nothing larger than a tile exists.
//
// Work item = (KV head, query tile). A tile holds up to TileRows rows, each row
// one (query, query head) pair, taking the G = heads / kvHeads query heads of
// every query that share the KV head, so each K/V block is read once for all of
// them (GQA without repeating K/V). Per item, for each block of KeyBlock keys:
//   1. K block transposed into a [headDim, KeyBlock] scratch, so scores
//      S = Q·Kᵀ run as broadcast-FMA over 4 rows × 2 vectors of keys.
//   2. Mask only where the block crosses a tile's causal or window boundary
//      (visible keys j of the query at position i: i − W < j ≤ i, see
//      Core/Models/AttentionWindow); blocks no row can see are never visited.
//   3. Online softmax per row: running max m and sum l, O rescaled by e^(m_old − m_new).
//   4. O += P·V over 4 rows × 2 vectors of the head, V rows read in place.
// O / l goes to the output at the end. Items are handed out late tiles first
// (they see the most keys) so the dynamic split of KernelPool ends evenly.
// Scratch is per thread and O(TileRows × (headDim + KeyBlock)): no buffer grows
// with the context or the chunk.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Platform.Engine.Kernels;

public static unsafe class FlashAttention
{
    /// <summary>(query, query head) rows per tile: 64 rows × 128 dims of Q and O are 32 KB each, L2-resident.</summary>
    internal const int TileRows = 64;
    /// <summary>Keys per block; a multiple of every path's width times 2 (the score micro-kernel's key step).</summary>
    internal const int KeyBlock = 64;

    /// <summary>True when the kernel handles this head size on every path (whole 16-lane vectors).</summary>
    public static bool Supports(int headDim) => headDim > 0 && headDim % 16 == 0;

    private struct Job
    {
        public float* Query;          // [queries, heads, headDim]
        public float* Keys;           // [slots, kvHeads, headDim]
        public float* Values;         // [slots, kvHeads, headDim]
        public long* Slots;           // slots of key positions 0 .. contextLength − 1
        public float* Output;         // [queries, heads, headDim]
        public int Queries, FirstPosition, Heads, KvHeads, HeadDim, Window, QueriesPerTile, Tiles;
        public float Scale;
        public AttentionPath Path;
    }

    /// <summary>
    /// Causal attention of <paramref name="queries"/> consecutive queries, the last at position contextLength − 1,
    /// over keys/values at positions 0 .. contextLength − 1 stored in the slots <paramref name="contextSlots"/>:
    /// output[i, h] = softmax_j(q[i, h] · k[j, h / G] · scale) · v[j, h / G] over the keys the query sees
    /// (j ≤ its position, and within the last <paramref name="window"/> positions when window &gt; 0).
    /// query and output are [queries, heads, headDim]; keys and values are the pools [slots, kvHeads, headDim].
    /// Uses up to <see cref="KernelThreads.Count"/> threads; call from one thread at a time.
    /// </summary>
    public static void Prefill(float* query, float* keys, float* values, long* contextSlots, int queries, int contextLength,
        int heads, int kvHeads, int headDim, float scale, int window, float* output)
    {
        if (queries <= 0) return;
        if (heads % kvHeads != 0) throw new ArgumentException($"heads ({heads}) must be a multiple of kvHeads ({kvHeads})");
        if (!Supports(headDim)) throw new ArgumentException($"head size {headDim} is not a multiple of 16; use the libtorch path");
        if (queries > contextLength) throw new ArgumentException($"{queries} queries cannot follow a context of {contextLength} positions");
        int queriesPerTile = Math.Max(1, TileRows / (heads / kvHeads));
        var job = new Job
        {
            Query = query, Keys = keys, Values = values, Slots = contextSlots, Output = output,
            Queries = queries, FirstPosition = contextLength - queries, Heads = heads, KvHeads = kvHeads, HeadDim = headDim,
            Window = Math.Max(0, window), QueriesPerTile = queriesPerTile, Tiles = (queries + queriesPerTile - 1) / queriesPerTile,
            Scale = scale, Path = AttentionKernels.ActivePath,
        };
        KernelPool.Run(&RunItem, &job, job.Tiles * kvHeads, KernelThreads.Count);
    }

    private static void RunItem(void* context, int item)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        int tile = job.Tiles - 1 - item / job.KvHeads, kvHead = item % job.KvHeads;
        switch (job.Path)
        {
            case AttentionPath.Vector512: RunTile<Lanes512, Vector512<float>>(ref job, tile, kvHead); break;
            case AttentionPath.Vector256: RunTile<Lanes256, Vector256<float>>(ref job, tile, kvHead); break;
            default: RunTile<LanesPortable, Vector<float>>(ref job, tile, kvHead); break;
        }
    }

    [ThreadStatic] private static float[]? _scratch;
    [ThreadStatic] private static nint[]? _valueRows;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunTile<TL, TV>(ref Job job, int tile, int kvHead) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int d = job.HeadDim, groups = job.Heads / job.KvHeads;
        int q0 = tile * job.QueriesPerTile, nq = Math.Min(job.QueriesPerTile, job.Queries - q0), rows = nq * groups;
        long rowStride = (long)job.KvHeads * d;
        int firstPos = job.FirstPosition + q0, lastPos = firstPos + nq - 1;
        int keyBegin = job.Window > 0 ? Math.Max(0, firstPos - job.Window + 1) : 0, keyEnd = lastPos + 1;

        // Scratch: Q (pre-scaled) and O [rows, d], scores [rows, KeyBlock], Kᵀ [d, KeyBlock], row max and sum.
        int need = 2 * rows * d + rows * KeyBlock + d * KeyBlock + 2 * rows;
        var scratch = _scratch;
        if (scratch is null || scratch.Length < need) _scratch = scratch = new float[Math.Max(need, 2 * TileRows * 128 + TileRows * KeyBlock + 128 * KeyBlock + 2 * TileRows)];
        var valueRows = _valueRows ??= new nint[KeyBlock];
        fixed (float* buffer = scratch)
        fixed (nint* vRows = valueRows)
        {
            float* qt = buffer, o = qt + rows * d, s = o + rows * d, kt = s + rows * KeyBlock, rowMax = kt + d * KeyBlock, rowSum = rowMax + rows;
            for (int qi = 0; qi < nq; qi++)
            {
                float* source = job.Query + ((long)(q0 + qi) * job.Heads + kvHead * groups) * d;
                for (int i = 0; i < groups * d; i++) qt[qi * groups * d + i] = source[i] * job.Scale;
            }
            new Span<float>(o, rows * d).Clear();
            new Span<float>(rowMax, rows).Fill(float.NegativeInfinity);
            new Span<float>(rowSum, rows).Clear();

            for (int kb = keyBegin; kb < keyEnd; kb += KeyBlock)
            {
                int n = Math.Min(KeyBlock, keyEnd - kb);
                for (int j = 0; j < n; j++)
                {
                    long slot = job.Slots[kb + j];
                    float* k = job.Keys + slot * rowStride + (long)kvHead * d;
                    for (int i = 0; i < d; i++) kt[i * KeyBlock + j] = k[i];
                    vRows[j] = (nint)(job.Values + slot * rowStride + (long)kvHead * d);
                }
                if (n < KeyBlock)
                    for (int i = 0; i < d; i++) new Span<float>(kt + i * KeyBlock + n, KeyBlock - n).Clear();

                Scores<TL, TV>(qt, kt, s, rows, d);
                // Whole block visible to every row of the tile: its last key is at or before the first query, and
                // (windowed) its first key is inside the last query's window. Else mask per element.
                bool visibleToAll = kb + n - 1 <= firstPos && (job.Window == 0 || kb > lastPos - job.Window);
                if (!visibleToAll || n < KeyBlock)
                    for (int r = 0; r < rows; r++)
                    {
                        int position = firstPos + r / groups;
                        int lowest = job.Window > 0 ? position - job.Window + 1 : 0;
                        float* sr = s + r * KeyBlock;
                        for (int j = 0; j < KeyBlock; j++)
                        {
                            int key = kb + j;
                            if (j >= n || key > position || key < lowest) sr[j] = float.NegativeInfinity;
                        }
                    }
                for (int r = 0; r < rows; r++)
                    OnlineSoftmax.Update<TL, TV>(s + r * KeyBlock, KeyBlock, ref rowMax[r], ref rowSum[r], o + r * d, d);
                AccumulateValues<TL, TV>(s, vRows, n, o, rows, d);
            }

            for (int qi = 0; qi < nq; qi++)
            {
                float* destination = job.Output + ((long)(q0 + qi) * job.Heads + kvHead * groups) * d;
                for (int g = 0; g < groups; g++)
                {
                    int r = qi * groups + g;
                    OnlineSoftmax.Finish<TL, TV>(o + r * d, rowSum[r], destination + g * d, d);
                }
            }
        }
    }

    /// <summary>s[r, j] = Σ_i q[r, i] · kᵀ[i, j] for rows × KeyBlock, as 4 rows × 2 key vectors of FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scores<TL, TV>(float* q, float* kt, float* s, int rows, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* q0 = q + r * d, q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
            for (int j = 0; j < KeyBlock; j += 2 * w)
            {
                TV a00 = TL.Zero, a01 = TL.Zero, a10 = TL.Zero, a11 = TL.Zero, a20 = TL.Zero, a21 = TL.Zero, a30 = TL.Zero, a31 = TL.Zero;
                float* k = kt + j;
                for (int i = 0; i < d; i++, k += KeyBlock)
                {
                    TV k0 = TL.Load(k), k1 = TL.Load(k + w);
                    TV b = TL.Broadcast(q0[i]);
                    a00 = TL.MultiplyAdd(b, k0, a00); a01 = TL.MultiplyAdd(b, k1, a01);
                    b = TL.Broadcast(q1[i]);
                    a10 = TL.MultiplyAdd(b, k0, a10); a11 = TL.MultiplyAdd(b, k1, a11);
                    b = TL.Broadcast(q2[i]);
                    a20 = TL.MultiplyAdd(b, k0, a20); a21 = TL.MultiplyAdd(b, k1, a21);
                    b = TL.Broadcast(q3[i]);
                    a30 = TL.MultiplyAdd(b, k0, a30); a31 = TL.MultiplyAdd(b, k1, a31);
                }
                float* sr = s + r * KeyBlock + j;
                TL.Store(sr, a00); TL.Store(sr + w, a01);
                TL.Store(sr + KeyBlock, a10); TL.Store(sr + KeyBlock + w, a11);
                TL.Store(sr + 2 * KeyBlock, a20); TL.Store(sr + 2 * KeyBlock + w, a21);
                TL.Store(sr + 3 * KeyBlock, a30); TL.Store(sr + 3 * KeyBlock + w, a31);
            }
        }
        for (; r < rows; r++)
        {
            float* qr = q + r * d;
            for (int j = 0; j < KeyBlock; j += w)
            {
                TV a = TL.Zero;
                for (int i = 0; i < d; i++) a = TL.MultiplyAdd(TL.Broadcast(qr[i]), TL.Load(kt + i * KeyBlock + j), a);
                TL.Store(s + r * KeyBlock + j, a);
            }
        }
    }

    /// <summary>o[r] += Σ_j p[r, j] · v_j over the first n keys, as 4 rows × 2 vectors of the head at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AccumulateValues<TL, TV>(float* p, nint* vRows, int n, float* o, int rows, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* p0 = p + r * KeyBlock, p1 = p0 + KeyBlock, p2 = p1 + KeyBlock, p3 = p2 + KeyBlock;
            float* o0 = o + r * d, o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
            int c = 0;
            for (; c + 2 * w <= d; c += 2 * w)
            {
                TV a00 = TL.Load(o0 + c), a01 = TL.Load(o0 + c + w), a10 = TL.Load(o1 + c), a11 = TL.Load(o1 + c + w);
                TV a20 = TL.Load(o2 + c), a21 = TL.Load(o2 + c + w), a30 = TL.Load(o3 + c), a31 = TL.Load(o3 + c + w);
                for (int j = 0; j < n; j++)
                {
                    float* v = (float*)vRows[j] + c;
                    TV v0 = TL.Load(v), v1 = TL.Load(v + w);
                    TV b = TL.Broadcast(p0[j]);
                    a00 = TL.MultiplyAdd(b, v0, a00); a01 = TL.MultiplyAdd(b, v1, a01);
                    b = TL.Broadcast(p1[j]);
                    a10 = TL.MultiplyAdd(b, v0, a10); a11 = TL.MultiplyAdd(b, v1, a11);
                    b = TL.Broadcast(p2[j]);
                    a20 = TL.MultiplyAdd(b, v0, a20); a21 = TL.MultiplyAdd(b, v1, a21);
                    b = TL.Broadcast(p3[j]);
                    a30 = TL.MultiplyAdd(b, v0, a30); a31 = TL.MultiplyAdd(b, v1, a31);
                }
                TL.Store(o0 + c, a00); TL.Store(o0 + c + w, a01); TL.Store(o1 + c, a10); TL.Store(o1 + c + w, a11);
                TL.Store(o2 + c, a20); TL.Store(o2 + c + w, a21); TL.Store(o3 + c, a30); TL.Store(o3 + c + w, a31);
            }
            for (; c < d; c += w)
            {
                TV a0 = TL.Load(o0 + c), a1 = TL.Load(o1 + c), a2 = TL.Load(o2 + c), a3 = TL.Load(o3 + c);
                for (int j = 0; j < n; j++)
                {
                    TV v = TL.Load((float*)vRows[j] + c);
                    a0 = TL.MultiplyAdd(TL.Broadcast(p0[j]), v, a0);
                    a1 = TL.MultiplyAdd(TL.Broadcast(p1[j]), v, a1);
                    a2 = TL.MultiplyAdd(TL.Broadcast(p2[j]), v, a2);
                    a3 = TL.MultiplyAdd(TL.Broadcast(p3[j]), v, a3);
                }
                TL.Store(o0 + c, a0); TL.Store(o1 + c, a1); TL.Store(o2 + c, a2); TL.Store(o3 + c, a3);
            }
        }
        for (; r < rows; r++)
            OnlineSoftmax.AccumulateRow<TL, TV>(p + r * KeyBlock, vRows, n, o + r * d, d);
    }
}

/// <summary>The per-row steps of the online softmax shared by the prefill and decode kernels.</summary>
internal static unsafe class OnlineSoftmax
{
    /// <summary>
    /// Folds a block of <paramref name="count"/> scores (a multiple of the width; −∞ = masked) into a row's running
    /// max and sum: rescales the row's accumulator <paramref name="o"/> by e^(m_old − m_new) and leaves
    /// e^(s − m_new) in <paramref name="s"/> (0 where masked). A block with no visible key leaves the row as it was.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Update<TL, TV>(float* s, int count, ref float rowMax, ref float rowSum, float* o, int d)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        TV max = TL.Load(s);
        for (int j = w; j < count; j += w) max = TL.Max(max, TL.Load(s + j));
        float blockMax = TL.HorizontalMax(max);
        if (float.IsNegativeInfinity(blockMax))
        {
            new Span<float>(s, count).Clear();
            return;
        }
        float newMax = MathF.Max(rowMax, blockMax);
        TV shift = TL.Broadcast(newMax), sum = TL.Zero;
        for (int j = 0; j < count; j += w)
        {
            TV e = TL.ExpShifted(TL.Load(s + j), shift);
            TL.Store(s + j, e);
            sum = TL.Add(sum, e);
        }
        if (newMax != rowMax)
        {
            float alpha = float.IsNegativeInfinity(rowMax) ? 0f : MathF.Exp(rowMax - newMax);
            TV a = TL.Broadcast(alpha);
            for (int c = 0; c < d; c += w) TL.Store(o + c, TL.Multiply(TL.Load(o + c), a));
            rowSum *= alpha;
            rowMax = newMax;
        }
        rowSum += TL.HorizontalSum(sum);
    }

    /// <summary>o += Σ_j p[j] · v_j over <paramref name="n"/> value rows, the head held in registers 4 vectors at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AccumulateRow<TL, TV>(float* p, nint* vRows, int n, float* o, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        int c = 0;
        for (; c + 4 * w <= d; c += 4 * w)
        {
            TV a0 = TL.Load(o + c), a1 = TL.Load(o + c + w), a2 = TL.Load(o + c + 2 * w), a3 = TL.Load(o + c + 3 * w);
            for (int j = 0; j < n; j++)
            {
                float* v = (float*)vRows[j] + c;
                TV b = TL.Broadcast(p[j]);
                a0 = TL.MultiplyAdd(b, TL.Load(v), a0);
                a1 = TL.MultiplyAdd(b, TL.Load(v + w), a1);
                a2 = TL.MultiplyAdd(b, TL.Load(v + 2 * w), a2);
                a3 = TL.MultiplyAdd(b, TL.Load(v + 3 * w), a3);
            }
            TL.Store(o + c, a0); TL.Store(o + c + w, a1); TL.Store(o + c + 2 * w, a2); TL.Store(o + c + 3 * w, a3);
        }
        for (; c < d; c += w)
        {
            TV a = TL.Load(o + c);
            for (int j = 0; j < n; j++) a = TL.MultiplyAdd(TL.Broadcast(p[j]), TL.Load((float*)vRows[j] + c), a);
            TL.Store(o + c, a);
        }
    }

    /// <summary>destination = o / sum (the softmax denominator applied once, at the end).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Finish<TL, TV>(float* o, float rowSum, float* destination, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        if (rowSum == 0)
        {
            new Span<float>(destination, d).Clear();
            return;
        }
        TV inverse = TL.Broadcast(1f / rowSum);
        for (int c = 0; c < d; c += w) TL.Store(destination + c, TL.Multiply(TL.Load(o + c), inverse));
    }
}
