// Prefill attention straight over the paged KV pools, tiled with an online
// softmax (the flash-attention scheme): a chunk of queries of one sequence
// attends to the keys 0 .. its last position, read in place from their slots.
//
// Why: the libtorch path gathers the whole context of a sequence into new K and
// V tensors, builds a [queries × heads/kvHeads, context] mask, and lets SDPA
// materialise scores of the same size: O(chunk × context) memory per layer and
// several full passes over it. Here nothing larger than a tile exists.
//
// First pass: every KV head's keys the chunk sees are transposed once into
// blocks of [headDim, KeyBlock] (Kᵀ, shared by all tiles of the call; O(context)
// floats, kept per calling thread between calls and grown when needed), work items (KV head, block).
// Before, each tile transposed each block it visited: with a 1,024-query chunk
// that was the same transpose 64 times, about a tenth of the kernel's time.
// Second pass, work item = (KV head, query tile). A tile holds up to TileRows
// rows, each row one (query, query head) pair, taking the G = heads / kvHeads
// query heads of every query that share the KV head, so each K/V block is read
// once for all of them (GQA without repeating K/V). Per item, for each block of
// KeyBlock keys:
//   1. Scores S = Q·Kᵀ as broadcast-FMA register tiles over the shared Kᵀ block:
//      with 16 lanes 4 rows × 4 vectors (the whole block: 16 accumulators, 8
//      loads per 16 FMAs), with narrower lanes 4 rows × 2 vectors (16 ymm).
//   2. Mask only where the block crosses a tile's causal or window boundary
//      (visible keys j of the query at position i: i − W < j ≤ i, see
//      Core/Models/AttentionWindow); blocks no row can see are never visited.
//   3. Online softmax per row: running max m and sum l, O rescaled by e^(m_old − m_new).
//   4. O += P·V over 4 rows × 4 vectors of the head with 16 lanes (d = 64 in one
//      pass, each O row loaded and stored once per block), else 4 rows × 2
//      vectors; V rows read in place.
// O / l goes to the output at the end. Items are handed out late tiles first
// (they see the most keys) so the dynamic split of KernelPool ends evenly.
// Scratch is per thread and O(TileRows × (headDim + KeyBlock)); the shared Kᵀ is
// O(context × kvHeads × headDim), the size of one layer's keys: no buffer grows
// with context² or chunk × context.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

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
        public float* Transposed;     // Kᵀ blocks [kvHeads, KeyBlocks, headDim, KeyBlock] of keys KeyBase ..
        public int Queries, FirstPosition, Heads, KvHeads, HeadDim, Window, QueriesPerTile, Tiles, KeyBase, KeyBlocks, ContextLength;
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
        window = Math.Max(0, window);
        int firstPosition = contextLength - queries;
        // The first key any query of the call sees: the first query's window start.
        int keyBase = window > 0 ? Math.Max(0, firstPosition - window + 1) : 0;
        int keyBlocks = (contextLength - keyBase + KeyBlock - 1) / KeyBlock;
        var job = new Job
        {
            Query = query, Keys = keys, Values = values, Slots = contextSlots, Output = output,
            Transposed = TransposedBuffer((long)kvHeads * keyBlocks * headDim * KeyBlock),
            Queries = queries, FirstPosition = firstPosition, Heads = heads, KvHeads = kvHeads, HeadDim = headDim,
            Window = window, QueriesPerTile = queriesPerTile, Tiles = (queries + queriesPerTile - 1) / queriesPerTile,
            KeyBase = keyBase, KeyBlocks = keyBlocks, ContextLength = contextLength,
            Scale = scale, Path = AttentionKernels.ActivePath,
        };
        KernelPool.Run(&TransposeItem, &job, keyBlocks * kvHeads, KernelThreads.Count);
        KernelPool.Run(&RunItem, &job, job.Tiles * kvHeads, KernelThreads.Count);
    }

    // Per calling thread: every engine has its own step thread, and one process may host several engines (the
    // router's tests run two workers in one process); a buffer shared by all of them let one engine's prefill
    // overwrite another's keys mid-call. A pinned managed array, so it is freed with its thread.
    [ThreadStatic] private static float[]? _transposed;

    /// <summary>
    /// The calling thread's Kᵀ buffer, 64-byte aligned, grown by half again (never shrunk) to at least
    /// <paramref name="floats"/>: one layer's keys of the longest context this thread has seen, e.g. 16 MB at 32K keys
    /// × 2 KV heads × 64 dims, 1 / (2 × layers) of that sequence's KV cache.
    /// </summary>
    private static float* TransposedBuffer(long floats)
    {
        const int AlignFloats = 16;
        var buffer = _transposed;
        if (buffer is null || buffer.LongLength - AlignFloats < floats)
        {
            long size = Math.Max(floats, buffer is null ? 0 : (buffer.LongLength - AlignFloats) * 3 / 2);
            if (size + AlignFloats > Array.MaxLength)
                throw new InvalidOperationException($"a prefill's transposed keys need {floats:N0} floats, more than one array holds; use a shorter prefill chunk or the libtorch attention path");
            _transposed = null; // let the old one go before the new one is allocated
            _transposed = buffer = GC.AllocateUninitializedArray<float>((int)(size + AlignFloats), pinned: true);
        }
        float* start = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
        return (float*)(((nint)start + 63) & ~(nint)63);
    }

    /// <summary>Transposes one KV head's block of KeyBlock keys into its [headDim, KeyBlock] place; keys past the context are 0.</summary>
    private static void TransposeItem(void* context, int item)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        int kvHead = item / job.KeyBlocks, block = item % job.KeyBlocks, d = job.HeadDim;
        int first = job.KeyBase + block * KeyBlock, n = Math.Min(KeyBlock, job.ContextLength - first);
        long rowStride = (long)job.KvHeads * d;
        float* kt = job.Transposed + ((long)kvHead * job.KeyBlocks + block) * d * KeyBlock;
        for (int j = 0; j < n; j++)
        {
            float* k = job.Keys + job.Slots[first + j] * rowStride + (long)kvHead * d;
            for (int i = 0; i < d; i++) kt[i * KeyBlock + j] = k[i];
        }
        if (n < KeyBlock)
            for (int i = 0; i < d; i++) new Span<float>(kt + i * KeyBlock + n, KeyBlock - n).Clear();
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
        // Blocks are aligned to the shared Kᵀ's, from KeyBase; keys of the first block below keyBegin are masked.
        int firstBlock = (keyBegin - job.KeyBase) / KeyBlock;
        float* transposed = job.Transposed + (long)kvHead * job.KeyBlocks * d * KeyBlock;

        // Scratch: Q (pre-scaled) and O [rows, d], scores [rows, KeyBlock], row max and sum.
        int need = 2 * rows * d + rows * KeyBlock + 2 * rows;
        var scratch = _scratch;
        if (scratch is null || scratch.Length < need) _scratch = scratch = new float[Math.Max(need, 2 * TileRows * 128 + TileRows * KeyBlock + 2 * TileRows)];
        var valueRows = _valueRows ??= new nint[KeyBlock];
        fixed (float* buffer = scratch)
        fixed (nint* vRows = valueRows)
        {
            float* qt = buffer, o = qt + rows * d, s = o + rows * d, rowMax = s + rows * KeyBlock, rowSum = rowMax + rows;
            for (int qi = 0; qi < nq; qi++)
            {
                float* source = job.Query + ((long)(q0 + qi) * job.Heads + kvHead * groups) * d;
                for (int i = 0; i < groups * d; i++) qt[qi * groups * d + i] = source[i] * job.Scale;
            }
            new Span<float>(o, rows * d).Clear();
            new Span<float>(rowMax, rows).Fill(float.NegativeInfinity);
            new Span<float>(rowSum, rows).Clear();

            for (int block = firstBlock, kb = job.KeyBase + firstBlock * KeyBlock; kb < keyEnd; block++, kb += KeyBlock)
            {
                int n = Math.Min(KeyBlock, keyEnd - kb);
                for (int j = 0; j < n; j++)
                    vRows[j] = (nint)(job.Values + job.Slots[kb + j] * rowStride + (long)kvHead * d);
                PrefetchValues(ref job, kb + KeyBlock, Math.Min(KeyBlock, keyEnd - kb - KeyBlock), kvHead);

                Scores<TL, TV>(qt, transposed + (long)block * d * KeyBlock, s, rows, d);
                // Whole block visible to every row of the tile: its first key is inside every row's window (at or after
                // keyBegin), its last key at or before the first query. Else mask per element.
                bool visibleToAll = kb + n - 1 <= firstPos && kb >= keyBegin && (job.Window == 0 || kb > lastPos - job.Window);
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

    /// <summary>
    /// Asks for the next block's V rows (scattered over the pool by the block table, so the hardware prefetcher does not
    /// find them) while this block's scores and P·V run: 4 KB of V per 16 keys is otherwise waited for row by row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchValues(ref Job job, int firstKey, int count, int kvHead)
    {
        if (!Sse.IsSupported) return;
        long rowStride = (long)job.KvHeads * job.HeadDim;
        for (int j = 0; j < count; j++)
        {
            byte* row = (byte*)(job.Values + job.Slots[firstKey + j] * rowStride + (long)kvHead * job.HeadDim);
            for (int offset = 0; offset < job.HeadDim * sizeof(float); offset += 64) Sse.Prefetch0(row + offset);
        }
    }

    /// <summary>s[r, j] = Σ_i q[r, i] · kᵀ[i, j] for rows × KeyBlock, as 4 rows × 2 key vectors of FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scores<TL, TV>(float* q, float* kt, float* s, int rows, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        int r = 0;
        if (w == 16)
            for (; r + 4 <= rows; r += 4)
                ScoresFourByFour<TL, TV>(q + r * d, kt, s + r * KeyBlock, d);
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

    /// <summary>Scores of 4 rows over a whole block of 64 keys (4 vectors of 16): 16 accumulators, 4 loads and 4 broadcasts per 16 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoresFourByFour<TL, TV>(float* q0, float* kt, float* s, int d) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        float* q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
        TV a00 = TL.Zero, a01 = TL.Zero, a02 = TL.Zero, a03 = TL.Zero, a10 = TL.Zero, a11 = TL.Zero, a12 = TL.Zero, a13 = TL.Zero;
        TV a20 = TL.Zero, a21 = TL.Zero, a22 = TL.Zero, a23 = TL.Zero, a30 = TL.Zero, a31 = TL.Zero, a32 = TL.Zero, a33 = TL.Zero;
        float* k = kt;
        for (int i = 0; i < d; i++, k += KeyBlock)
        {
            TV k0 = TL.Load(k), k1 = TL.Load(k + w), k2 = TL.Load(k + 2 * w), k3 = TL.Load(k + 3 * w);
            TV b = TL.Broadcast(q0[i]);
            a00 = TL.MultiplyAdd(b, k0, a00); a01 = TL.MultiplyAdd(b, k1, a01); a02 = TL.MultiplyAdd(b, k2, a02); a03 = TL.MultiplyAdd(b, k3, a03);
            b = TL.Broadcast(q1[i]);
            a10 = TL.MultiplyAdd(b, k0, a10); a11 = TL.MultiplyAdd(b, k1, a11); a12 = TL.MultiplyAdd(b, k2, a12); a13 = TL.MultiplyAdd(b, k3, a13);
            b = TL.Broadcast(q2[i]);
            a20 = TL.MultiplyAdd(b, k0, a20); a21 = TL.MultiplyAdd(b, k1, a21); a22 = TL.MultiplyAdd(b, k2, a22); a23 = TL.MultiplyAdd(b, k3, a23);
            b = TL.Broadcast(q3[i]);
            a30 = TL.MultiplyAdd(b, k0, a30); a31 = TL.MultiplyAdd(b, k1, a31); a32 = TL.MultiplyAdd(b, k2, a32); a33 = TL.MultiplyAdd(b, k3, a33);
        }
        TL.Store(s, a00); TL.Store(s + w, a01); TL.Store(s + 2 * w, a02); TL.Store(s + 3 * w, a03);
        s += KeyBlock;
        TL.Store(s, a10); TL.Store(s + w, a11); TL.Store(s + 2 * w, a12); TL.Store(s + 3 * w, a13);
        s += KeyBlock;
        TL.Store(s, a20); TL.Store(s + w, a21); TL.Store(s + 2 * w, a22); TL.Store(s + 3 * w, a23);
        s += KeyBlock;
        TL.Store(s, a30); TL.Store(s + w, a31); TL.Store(s + 2 * w, a32); TL.Store(s + 3 * w, a33);
    }

    /// <summary>
    /// o0..o3 (4 rows' accumulators at head offset c, 4 vectors each) += Σ_j p[r, j] · v_j[c ..] over the first n keys:
    /// 16 accumulators, 4 loads and 4 broadcasts per 16 FMAs; p0 is the first row's probabilities, KeyBlock apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ValuesFourByFour<TL, TV>(float* p0, nint* vRows, int n, float* o0, float* o1, float* o2, float* o3, int c)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        float* p1 = p0 + KeyBlock, p2 = p1 + KeyBlock, p3 = p2 + KeyBlock;
        TV a00 = TL.Load(o0), a01 = TL.Load(o0 + w), a02 = TL.Load(o0 + 2 * w), a03 = TL.Load(o0 + 3 * w);
        TV a10 = TL.Load(o1), a11 = TL.Load(o1 + w), a12 = TL.Load(o1 + 2 * w), a13 = TL.Load(o1 + 3 * w);
        TV a20 = TL.Load(o2), a21 = TL.Load(o2 + w), a22 = TL.Load(o2 + 2 * w), a23 = TL.Load(o2 + 3 * w);
        TV a30 = TL.Load(o3), a31 = TL.Load(o3 + w), a32 = TL.Load(o3 + 2 * w), a33 = TL.Load(o3 + 3 * w);
        for (int j = 0; j < n; j++)
        {
            float* v = (float*)vRows[j] + c;
            TV v0 = TL.Load(v), v1 = TL.Load(v + w), v2 = TL.Load(v + 2 * w), v3 = TL.Load(v + 3 * w);
            TV b = TL.Broadcast(p0[j]);
            a00 = TL.MultiplyAdd(b, v0, a00); a01 = TL.MultiplyAdd(b, v1, a01); a02 = TL.MultiplyAdd(b, v2, a02); a03 = TL.MultiplyAdd(b, v3, a03);
            b = TL.Broadcast(p1[j]);
            a10 = TL.MultiplyAdd(b, v0, a10); a11 = TL.MultiplyAdd(b, v1, a11); a12 = TL.MultiplyAdd(b, v2, a12); a13 = TL.MultiplyAdd(b, v3, a13);
            b = TL.Broadcast(p2[j]);
            a20 = TL.MultiplyAdd(b, v0, a20); a21 = TL.MultiplyAdd(b, v1, a21); a22 = TL.MultiplyAdd(b, v2, a22); a23 = TL.MultiplyAdd(b, v3, a23);
            b = TL.Broadcast(p3[j]);
            a30 = TL.MultiplyAdd(b, v0, a30); a31 = TL.MultiplyAdd(b, v1, a31); a32 = TL.MultiplyAdd(b, v2, a32); a33 = TL.MultiplyAdd(b, v3, a33);
        }
        TL.Store(o0, a00); TL.Store(o0 + w, a01); TL.Store(o0 + 2 * w, a02); TL.Store(o0 + 3 * w, a03);
        TL.Store(o1, a10); TL.Store(o1 + w, a11); TL.Store(o1 + 2 * w, a12); TL.Store(o1 + 3 * w, a13);
        TL.Store(o2, a20); TL.Store(o2 + w, a21); TL.Store(o2 + 2 * w, a22); TL.Store(o2 + 3 * w, a23);
        TL.Store(o3, a30); TL.Store(o3 + w, a31); TL.Store(o3 + 2 * w, a32); TL.Store(o3 + 3 * w, a33);
    }

    /// <summary>o[r] += Σ_j p[r, j] · v_j over the first n keys, as 4 rows × 4 vectors of the head with 16 lanes, else 4 rows × 2 vectors.</summary>
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
            if (w == 16)
                for (; c + 4 * w <= d; c += 4 * w)
                    ValuesFourByFour<TL, TV>(p0, vRows, n, o0 + c, o1 + c, o2 + c, o3 + c, c);
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
