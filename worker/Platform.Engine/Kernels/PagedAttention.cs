// Decode attention straight over the paged KV cache: one query token per
// sequence, keys and values read in place from their slots (no gather copy),
// grouped-query heads served from one read of each key/value row.
//
// Why: the libtorch path gathers each sequence's K and V into new tensors and
// runs attention per sequence, ~10 native calls per sequence per layer; at batch
// 32 that per-call cost, not bandwidth, dominated decode. Here one call covers
// every decode sequence of a layer.
//
// Work split (flash-decoding): each sequence's context is cut into parts of
// SplitKeys keys, and a work item is one part, every KV head of it, of every
// sequence whose slots there are the same (PlanGroups): sequences that share a
// prompt prefix (n samples of one prompt, requests over one document) read the
// shared rows once per step instead of once each; at 32K on the small preset,
// batch 8 over one shared context decoded 304 tok/s against 161 before. At
// batch 1 the parts put a 16K context on every thread instead of one per KV
// head, and the step ends evenly. Each part runs one pass of online softmax
// (OnlineSoftmax, shared with FlashAttention) over blocks of KeyBlock keys:
// per block, each KV head's G query heads attend as G rows over the block's rows,
// and the part writes its partial output and log-sum-exp; a sequence cut in
// several parts is then merged exactly with AttentionMerge (the same merge
// DistAttention uses across workers). The cut is fixed, not tuned to the thread
// count, so results do not depend on it. Each thread claims its items one at a time, and
// its next one shortly before the current one ends, so the prefetches run on across an
// item's edge (AttendItems).
// Rows across the lanes: where the slots of an item are read for at least TransposedRows query rows per KV head
// (sequences over one shared context × G), AttendTransposed holds those rows across the vector lanes: a key element
// broadcast against vectors of queries gives scores as [key, row] with no horizontal sum per key, and the softmax runs
// down the lanes. On an AMD EPYC Zen 4, eight sequences over one context (bench prefill --decode-only, three
// alternating runs) took 906-919 us per layer at 8K against 1,120-1,131 and 3,550-3,910 at 32K against 4,813-4,827.
// Its sums run in another order, so the choice follows all the sequences that read those slots (PlanGroups' family),
// never the item's own count: identical sequences get the same bits whichever item the cap puts each in.
// Memory: a thread reads whole slot rows (all KV heads, contiguous in the pool)
// and prefetches whole rows ahead. Items of one KV head each (the first version)
// had both threads read alternate half-rows of the same slots; at 32K on the small
// preset whole rows read 26.7-33.7 GB/s against 22-29 (bench prefill
// --decode-only, shuffled and in-order blocks, same session).
// Paths: AVX-512, AVX2 and portable, picked by AttentionKernels.ActivePath.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe class PagedAttention
{
    /// <summary>Keys per part of a sequence's context (see the header).</summary>
    internal const int SplitKeys = 512;
    /// <summary>How far ahead, in keys, the rows are prefetched (see AttendGroup).</summary>
    private const int PrefetchAhead = 2 * KeyBlock;
    private const int KeyBlock = FlashAttention.KeyBlock;

    [ThreadStatic] private static float[]? _scratch;
    [ThreadStatic] private static nint[]? _rowPointers; // a block's value rows (odd G), the prefetch rows at a part's end, two parts' row offsets
    // The caller's partials and item map, reused across calls (one call at a time per thread).
    [ThreadStatic] private static float[]? _partials;
    [ThreadStatic] private static int[]? _partStarts;
    /// <summary>Work items of this thread's last call (see PlanGroups); for tests.</summary>
    [ThreadStatic] internal static int LastWorkItems;
    [ThreadStatic] private static int[]? _groups;  // the work items' plan (PlanGroups)
    [ThreadStatic] private static int[]? _leaders; // PlanGroups' scratch

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
        public int* PartStarts;       // [seqs + 1]: first global part of each sequence
        public int* GroupStarts;      // [items + 1]: each work item's first member in Members
        public int* Members;          // global parts, grouped: the parts of one item name the same slots
        public int* PartSequence;     // [parts]: the sequence of each global part
        public int* ItemFamily;       // [items]: sequences that read the item's slots, over all the items of those slots
        public float* PartOutputs;    // [parts, heads, headDim] for sequences cut in several parts
        public float* PartLogSumExps; // [parts, heads]
        public int Sequences, Heads, KvHeads, HeadDim;
        public int Items;             // work items (PlanGroups)
        public int NextItem;          // the next item a thread claims (Interlocked)
        public float Scale;
        public AttentionPath Path;
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
        // The vector paths need whole 16-float vectors per head; other head sizes take the portable or scalar lanes (RunPart).
        var path = AttentionKernels.ActivePath;

        var partStarts = _partStarts;
        if (partStarts is null || partStarts.Length < sequences + 1) _partStarts = partStarts = new int[Math.Max(sequences + 1, 64)];
        int parts = 0;
        long splitFloats = 0;
        for (int s = 0; s < sequences; s++)
        {
            partStarts[s] = parts;
            int count = PartsOf(contextLengths[s]);
            parts += count;
            if (count > 1) splitFloats += (long)count * heads * (headDim + 1);
        }
        partStarts[sequences] = parts;
        // Work items: a part, together with the same part of every later sequence whose slots there are the very
        // same (a shared prompt prefix: SCBench's shared-context shape, n samples of one prompt). One item reads
        // those K/V rows once for all of them, where items of one part each read them once per sequence.
        int groupInts = 4 * parts + 1;
        var groups = _groups;
        if (groups is null || groups.Length < groupInts) _groups = groups = new int[Math.Max(groupInts, 256)];
        int items = PlanGroups(groups, partStarts, slots, slotOffsets, contextLengths, sequences, parts, MembersPerItem(parts, KernelThreads.Count));
        LastWorkItems = items;
        // Partials of split sequences, indexed by global part; unsplit sequences write their output directly.
        long partialFloats = (long)parts * heads * (headDim + 1);
        var partials = _partials;
        if (splitFloats > 0 && (partials is null || partials.Length < partialFloats)) _partials = partials = new float[partialFloats];
        fixed (int* starts = partStarts)
        fixed (int* plan = groups)
        fixed (float* partial = splitFloats > 0 ? partials : null)
        {
            var job = new Job
            {
                Query = query, Keys = keys, Values = values, Slots = slots, SlotOffsets = slotOffsets, ContextLengths = contextLengths,
                Output = output, LogSumExp = logSumExp, PartStarts = starts,
                GroupStarts = plan, Members = plan + parts + 1, PartSequence = plan + 2 * parts + 1, ItemFamily = plan + 3 * parts + 1,
                PartOutputs = partial, PartLogSumExps = partial == null ? null : partial + (long)parts * heads * headDim,
                Sequences = sequences, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Scale = scale, Path = path,
                Items = items,
            };
            // One loop per thread, each claiming items until none is left (AttendItems).
            KernelPool.Run(&RunWorker, &job, Math.Min(items, Math.Max(1, KernelThreads.Count)), KernelThreads.Count);
            if (splitFloats > 0) KernelPool.Run(&MergeSequence, &job, sequences, KernelThreads.Count);
        }
    }

    /// <summary>
    /// Most sequences one work item serves: enough items for every thread (2 per thread where the parts allow), and
    /// at most MaxMembers (each member's query and accumulators stay in L1/L2 while the rows stream). Eight samples
    /// of one 300-token prompt would otherwise be one item on one core.
    /// </summary>
    internal static int MembersPerItem(int parts, int threads) => Math.Clamp(parts / (2 * Math.Max(1, threads)), 1, MaxMembers);

    private const int MaxMembers = 8;

    /// <summary>Query rows per KV head (sequences over the same slots × G) from which an item holds its rows across the lanes (AttendTransposed).</summary>
    internal const int TransposedRows = 16;

    /// <summary>Parts a context of <paramref name="length"/> keys is cut into (one for an empty context).</summary>
    private static int PartsOf(int length) => Math.Max(1, (length + SplitKeys - 1) / SplitKeys);

    /// <summary>The keys [Begin, End) of part <paramref name="local"/> of a context of <paramref name="length"/> keys.</summary>
    private static (int Begin, int End) PartKeys(int length, int local) => (local * SplitKeys, Math.Min(length, (local + 1) * SplitKeys));

    /// <summary>
    /// Fills plan with [group starts: parts + 1][members: parts][each part's sequence: parts][each item's family: parts]
    /// (how many sequences read its slots, over every item of them; it picks the item's arithmetic) and returns the
    /// number of work items. A part joins the item of an earlier sequence's part when both cover the same keys
    /// through the same slots, up to cap members per item (then a new item of those slots opens).
    /// </summary>
    private static int PlanGroups(int[] plan, int[] partStarts, long* slots, int* slotOffsets, int* contextLengths, int sequences, int parts, int cap)
    {
        var groupStarts = plan.AsSpan(0, parts + 1);
        var members = plan.AsSpan(parts + 1, parts);
        var sequenceOf = plan.AsSpan(2 * parts + 1, parts);
        var itemFamily = plan.AsSpan(3 * parts + 1, parts);
        var scratch = _leaders;
        if (scratch is null || scratch.Length < 4 * parts) _leaders = scratch = new int[Math.Max(4 * parts, 256)];
        var leader = scratch.AsSpan(0, parts);   // the part whose item each part joins (itself when it leads one)
        var itemOf = scratch.AsSpan(parts, parts);
        var openItem = scratch.AsSpan(2 * parts, parts); // per leader: the item its next member joins, and that item's size
        var openSize = scratch.AsSpan(3 * parts, parts);
        int items = 0;
        for (int s = 0; s < sequences; s++)
        {
            int first = partStarts[s], count = partStarts[s + 1] - first, length = contextLengths[s];
            for (int l = 0; l < count; l++)
            {
                int p = first + l;
                sequenceOf[p] = s;
                leader[p] = p;
                var (begin, end) = PartKeys(length, l);
                var mine = new ReadOnlySpan<long>(slots + slotOffsets[s] + begin, Math.Max(0, end - begin));
                for (int t = 0; t < s && leader[p] == p && mine.Length > 0; t++)
                {
                    int otherCount = partStarts[t + 1] - partStarts[t], other = partStarts[t] + l;
                    if (l >= otherCount || leader[other] != other) continue;
                    if (PartKeys(contextLengths[t], l).End != end || slots[slotOffsets[t] + begin] != mine[0]) continue;
                    if (mine.SequenceEqual(new ReadOnlySpan<long>(slots + slotOffsets[t] + begin, end - begin))) leader[p] = other;
                }
                int lead = leader[p];
                if (lead == p || openSize[lead] == cap)
                {
                    // A new item: for a part that leads one, or when its leader's open item holds cap members.
                    openItem[lead] = items++;
                    openSize[lead] = 0;
                }
                itemOf[p] = openItem[lead];
                openSize[lead]++;
            }
        }
        // Every item of one leader's slots gets the family's size, so all the sequences reading the same slots take the
        // same arithmetic (AttendGroup), whichever item the cap put each of them in.
        var familySize = openItem;
        familySize.Clear();
        for (int p = 0; p < parts; p++) familySize[leader[p]]++;
        for (int p = 0; p < parts; p++) itemFamily[itemOf[p]] = familySize[leader[p]];
        // Counting sort of the parts by item: the members of item i are members[groupStarts[i] .. groupStarts[i + 1]).
        groupStarts[..(items + 1)].Clear();
        for (int p = 0; p < parts; p++) groupStarts[itemOf[p] + 1]++;
        for (int i = 0; i < items; i++) groupStarts[i + 1] += groupStarts[i];
        for (int p = 0; p < parts; p++) members[groupStarts[itemOf[p]]++] = p;
        for (int i = items; i > 0; i--) groupStarts[i] = groupStarts[i - 1];
        groupStarts[0] = 0;
        return items;
    }

    private static void RunWorker(void* context, int worker)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        switch (job.HeadDim % 16 == 0 ? job.Path : AttentionPath.Portable)
        {
            case AttentionPath.Vector512: AttendItems<Lanes512, Vector512<float>>(ref job); break;
            case AttentionPath.Vector256: AttendItems<Lanes256, Vector256<float>>(ref job); break;
            default:
                if (job.HeadDim % Vector<float>.Count == 0) AttendItems<LanesPortable, Vector<float>>(ref job);
                else AttendItems<LanesScalar, float>(ref job);
                break;
        }
    }

    /// <summary>
    /// One thread's share: it claims items one at a time until none is left. Each item claims the thread's next one
    /// PrefetchAhead keys before its own end, so the prefetches run on into the next item's first rows. Items that
    /// each started cold (their first PrefetchAhead keys never prefetched, a quarter of a 512-key part) left the
    /// memory idle at every item's end and the core waiting at the next one's start: on the AVX2-only EPYC (Zen 1)
    /// a decode call took 639-681 us per layer at 8K against 889-968 before, and 2,487-2,767 at 32K against
    /// 3,535-4,444 (bench prefill --decode-only, two threads, three alternating runs).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendItems<TL, TV>(ref Job job) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        var tables = _rowPointers;
        if (tables is null || tables.Length < 2 * KeyBlock + 2 * SplitKeys) _rowPointers = tables = new nint[2 * KeyBlock + 2 * SplitKeys];
        fixed (nint* table = tables)
        {
            nint* rows = table + 2 * KeyBlock, spare = rows + SplitKeys;
            int item = Claim(ref job, rows, out int length);
            while (item < job.Items)
            {
                int next = AttendGroup<TL, TV>(ref job, item, rows, length, spare, out int nextLength, table, table + KeyBlock);
                nint* swap = rows;
                rows = spare;
                spare = swap;
                item = next;
                length = nextLength;
            }
        }
    }

    /// <summary>Claims the next unclaimed item and fills rows with its rows (see ItemRows); Items when none is left.</summary>
    private static int Claim(ref Job job, nint* rows, out int length)
    {
        int item = Interlocked.Increment(ref job.NextItem) - 1;
        length = item < job.Items ? ItemRows(ref job, item, rows) : 0;
        return item;
    }

    /// <summary>Fills rows with the element offsets of the item's rows (KV head 0; a KV head's rows are its base + these) and returns their count.</summary>
    private static int ItemRows(ref Job job, int item, nint* rows)
    {
        int lead = job.Members[job.GroupStarts[item]], seq = job.PartSequence[lead];
        var (begin, end) = PartKeys(job.ContextLengths[seq], lead - job.PartStarts[seq]);
        long* slots = job.Slots + job.SlotOffsets[seq];
        long rowStride = (long)job.KvHeads * job.HeadDim;
        for (int j = begin; j < end; j++) rows[j - begin] = (nint)(slots[j] * rowStride);
        return end - begin;
    }

    /// <summary>
    /// One work item: a part of one or more sequences whose slots there are the same, every KV head, over the
    /// item's <paramref name="length"/> rows (partRows, from ItemRows). Block by block, each KV head's G query heads of
    /// each member attend over the block's rows, which the first member brings into L1 and the others read from
    /// there. Returns the thread's next item (claimed on the way, its rows in nextRowsOut; Items when none is left).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int AttendGroup<TL, TV>(ref Job job, int item, nint* partRows, int length, nint* nextRowsOut, out int nextLength,
        nint* vRows, nint* staging) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int heads = job.Heads, kvHeads = job.KvHeads, groups = heads / kvHeads, d = job.HeadDim, w = TL.Width;
        int* members = job.Members + job.GroupStarts[item];
        int count = job.GroupStarts[item + 1] - job.GroupStarts[item];
        long rowStride = (long)kvHeads * d;
        int next = -1;
        nextLength = 0;

        int stats = (2 * count * heads + 15) / 16 * 16; // row maxima and sums, rounded up so what follows stays 64-byte aligned
        // Rows across the lanes (AttendTransposed) where the item's slots are read for enough query rows to fill vectors.
        bool transposed = (typeof(TL) == typeof(Lanes512) || typeof(TL) == typeof(Lanes256))
            && groups % 2 == 0 && job.ItemFamily[item] * groups >= TransposedRows;
        int r = count * groups, rp = (r + w - 1) / w * w, rowStats = (rp + 15) / 16 * 16;
        int need = 2 * count * heads * d + groups * KeyBlock + stats + 4 * w * w + 16
            + (transposed ? (kvHeads * d + KeyBlock) * rp + (2 * kvHeads + 1) * rowStats : 0);
        var scratch = _scratch;
        if (scratch is null || scratch.Length < need) _scratch = scratch = new float[Math.Max(need, 4096)];
        fixed (float* pinned = scratch)
        {
            // Vector stores and the loads that read them back (score lanes, accumulators) must not straddle cache
            // lines: a split store does not forward to the load after it.
            float* buffer = (float*)(((nint)pinned + 63) & ~(nint)63);
            // vRows: the value rows of the KV head being served, for an odd G's last head. partRows holds the item's
            // rows, computed once per item (per block, with the prefetch rows' apart, the loops cost ~4 % of an
            // in-cache call): a block's rows and the rows PrefetchAhead keys on are views of it, or, near its end,
            // staging: its last rows and the next item's first.
            // Per member m: its scaled query q + m·H·d, accumulator o + m·H·d, row max and sum at m·H.
            int memberFloats = heads * d;
            float* q = buffer, o = q + count * memberFloats, s = o + count * memberFloats;
            float* rowMax = s + groups * KeyBlock, rowSum = rowMax + count * heads;
            float* lanes = rowMax + stats; // per query head of a tile, w rows of w partial sums, reduced w at a time (SumEach)
            // Transposed: per KV head the queries as [d, rp] (lane = member · G + head in its group, padded with zeros),
            // the block's scores and then weights as [KeyBlock, rp], and per KV head each lane's running max and sum.
            float* qT = lanes + 4 * w * w, sT = qT + kvHeads * d * rp, maxT = sT + KeyBlock * rp, sumT = maxT + kvHeads * rowStats;
            float* alphaT = sumT + kvHeads * rowStats;
            for (int m = 0; m < count; m++)
            {
                float* source = job.Query + (long)job.PartSequence[members[m]] * memberFloats, qm = q + m * memberFloats;
                TV scale = TL.Broadcast(job.Scale); // heads · d is a whole number of vectors (see RunWorker)
                for (int i = 0; i < memberFloats; i += w) TL.Store(qm + i, TL.Multiply(TL.Load(source + i), scale));
            }
            new Span<float>(o, count * memberFloats).Clear();
            new Span<float>(rowMax, count * heads).Fill(float.NegativeInfinity);
            new Span<float>(rowSum, count * heads).Clear();
            if (transposed)
            {
                for (int kvHead = 0; kvHead < kvHeads; kvHead++)
                    for (int lane = 0; lane < rp; lane++)
                    {
                        float* source = LaneRow(q + kvHead * groups * d, lane, groups, memberFloats, d), line = qT + kvHead * d * rp + lane;
                        for (int c = 0; c < d; c++) line[c * rp] = lane < r ? source[c] : 0f;
                    }
                new Span<float>(maxT, kvHeads * rowStats).Fill(float.NegativeInfinity);
                new Span<float>(sumT, kvHeads * rowStats).Clear();
            }

            for (int kb = 0; kb < length; kb += KeyBlock)
            {
                int n = Math.Min(KeyBlock, length - kb);
                nint* rowBases = partRows + kb;
                // Whole rows (every KV head) PrefetchAhead keys on, into L2, while this block computes: the block
                // table scatters blocks, so the hardware prefetchers see only runs of one block's rows. With a tile
                // of four query heads they are spread evenly over every KV head's tile loop (each KV head a share);
                // otherwise they go out here at once. All in KV head 0's tiles (two rows per tile, the first
                // version) was a burst of 32 lines every ~60 ns, more than the core keeps in flight: on an
                // AVX2-only EPYC (Zen 1) an 8K decode call took 991-1,275 us per layer that way against 755-1,217
                // spread out, six alternating runs, faster in every one.
                int target = kb + PrefetchAhead, nextCount = KeyBlock;
                nint* nextRows = partRows + target;
                if (target + KeyBlock > length)
                {
                    if (next < 0) next = Claim(ref job, nextRowsOut, out nextLength);
                    nextCount = 0;
                    for (int j = target; j < length; j++) staging[nextCount++] = partRows[j];
                    for (int j = Math.Max(0, target - length); j < nextLength && nextCount < KeyBlock; j++) staging[nextCount++] = nextRowsOut[j];
                    nextRows = staging;
                }
                if (groups < 4)
                    for (int j = 0; j < nextCount; j++) PrefetchRow(job.Keys, job.Values, nextRows[j], (int)rowStride);

                for (int kvHead = 0; kvHead < kvHeads; kvHead++)
                {
                    int firstHead = kvHead * groups;
                    float* keys = job.Keys + (long)kvHead * d, values = job.Values + (long)kvHead * d;
                    // This KV head's share of the rows to prefetch, spread over its score tiles (see the header).
                    int share0 = kvHead * nextCount / kvHeads, share1 = (kvHead + 1) * nextCount / kvHeads;
                    if (transposed)
                    {
                        AttendTransposed<TL, TV>(qT + kvHead * d * rp, keys, values, rowBases, n, rp, r, d, sT, maxT + kvHead * rowStats,
                            sumT + kvHead * rowStats, alphaT, o + firstHead * d, memberFloats, groups,
                            job.Keys, job.Values, nextRows + share0, share1 - share0, (int)rowStride);
                        continue;
                    }
                    if (groups % 2 == 1) // the last head's P·V (AccumulateRow) takes row addresses
                        for (int j = 0; j < n; j++) vRows[j] = (nint)(values + rowBases[j]);
                    for (int m = 0; m < count; m++)
                    {
                        int spread = m == 0 && groups >= 4 ? share1 - share0 : 0;
                        int row0 = m * heads + firstHead; // this member's first query head of the KV head, as a row of o
                        Scores<TL, TV>(q + row0 * d, keys, rowBases, n, groups, d, s, lanes, spread, job.Keys, job.Values, nextRows + share0, (int)rowStride);
                        for (int g = 0; g < groups; g++)
                        {
                            float* sg = s + g * KeyBlock;
                            for (int j = n; j < KeyBlock; j++) sg[j] = float.NegativeInfinity;
                            OnlineSoftmax.Update<TL, TV>(sg, KeyBlock, ref rowMax[row0 + g], ref rowSum[row0 + g], o + (row0 + g) * d, d);
                        }
                        // P·V two query heads at a time: each value vector loaded feeds both heads' accumulators.
                        float* oh = o + row0 * d;
                        // On AVX-512 (32 registers) four heads at a time: each value vector loaded feeds four accumulators.
                        int h = 0;
                        if (typeof(TL) == typeof(Lanes512))
                            for (; h + 4 <= groups; h += 4)
                                AccumulateRowQuad<TL, TV>(s + h * KeyBlock, KeyBlock, 1, values, rowBases, n, oh + h * d, d);
                        for (; h + 2 <= groups; h += 2)
                            AccumulateRowPair<TL, TV>(s + h * KeyBlock, s + (h + 1) * KeyBlock, 1, values, rowBases, n, oh + h * d, oh + (h + 1) * d, d);
                        if (h < groups) OnlineSoftmax.AccumulateRow<TL, TV>(s + h * KeyBlock, vRows, n, oh + h * d, d);
                    }
                }
            }
            if (transposed) // each lane's max and sum back to its (member, head) row
                for (int kvHead = 0; kvHead < kvHeads; kvHead++)
                    for (int lane = 0; lane < r; lane++)
                    {
                        int row = lane / groups * heads + kvHead * groups + lane % groups;
                        rowMax[row] = maxT[kvHead * rowStats + lane];
                        rowSum[row] = sumT[kvHead * rowStats + lane];
                    }
            for (int m = 0; m < count; m++)
            {
                // Where this member's result goes: straight to the output, or to its partial when its sequence is cut.
                // (A member's sequence may be cut where the leader's is not: 512 keys shared with a longer one.)
                int part = members[m], seq = job.PartSequence[part];
                float* destination, lse;
                if (job.PartStarts[seq + 1] - job.PartStarts[seq] == 1)
                {
                    destination = job.Output + (long)seq * memberFloats;
                    lse = job.LogSumExp == null ? null : job.LogSumExp + (long)seq * heads;
                }
                else
                {
                    destination = job.PartOutputs + (long)part * memberFloats;
                    lse = job.PartLogSumExps + (long)part * heads;
                }
                for (int g = 0; g < heads; g++)
                {
                    int row = m * heads + g;
                    OnlineSoftmax.Finish<TL, TV>(o + row * d, rowSum[row], destination + g * d, d);
                    if (lse != null) lse[g] = rowSum[row] == 0 ? float.NegativeInfinity : rowMax[row] + MathF.Log(rowSum[row]);
                }
            }
        }
        // An empty part (an empty context) has no blocks: it claims here.
        return next < 0 ? Claim(ref job, nextRowsOut, out nextLength) : next;
    }

    /// <summary>
    /// s[g, j] = q_g · k_j for the G query heads of one KV head over a block's n key rows (s rows KeyBlock apart).
    /// Each key's dot product is left as one vector of partial sums and w of them are reduced together (a
    /// horizontal sum per key cost more than its dot product); on AVX2 and AVX-512 a tile's eight are reduced in
    /// registers instead (Lanes256.StoreTileSums, after TileHalf: in cache on an AVX2-only EPYC, 5 % less time per
    /// call than storing the lanes for SumEach), which the portable lanes still do. Four query heads x two keys per register tile:
    /// each key vector and each query vector loaded feeds several FMAs. Past the block's last key the last key is
    /// repeated; the caller masks those scores. The first <paramref name="spread"/> rows of nextRows are prefetched
    /// along the way, evenly over the tiles.
    /// </summary>
    // Too large for the JIT to inline: without AggressiveOptimization it would start unoptimized (Tier0, its lane
    // helpers called, not inlined) and a short decode would end before it tiered up.
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Scores<TL, TV>(float* q, float* keys, nint* rows, int n, int groups, int d, float* s, float* lanes,
        int spread, float* keyPool, float* valuePool, nint* nextRows, int rowFloats)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        // A head of four vectors on AVX-512 (d = 64) keeps the tile's four query heads in 16 registers for the block.
        bool held = typeof(TL) == typeof(Lanes512) && d == 4 * w;
        // The spread rows go out evenly over the key-pair tiles of the first group of heads.
        var prefetch = new PrefetchSpread(nextRows, spread, held ? (n + 1) / 2 : (n + w - 1) / w * w / 2);
        int g0 = 0;
        if (held)
            for (; g0 + 4 <= groups; g0 += 4)
            {
                // Each key pair loads its two rows once and reduces in registers, as below; the queries are not reloaded
                // per key pair (the same bits). On an AMD EPYC Zen 4 (bench prefill --decode-only, batch 1, alternating
                // runs), blocks in order: 8K 159-169 us per layer against 170-174, 32K 975-1,122 against 1,156-1,293 in
                // four runs; shuffled blocks 3-5 % slower at 32K (1,179-1,330 against 1,141-1,323), even at 8K.
                float* qq = q + g0 * d;
                // y<head><vector>: query head g0 + head, floats [vector·w, (vector + 1)·w).
                TV y00 = TL.Load(qq), y01 = TL.Load(qq + w), y02 = TL.Load(qq + 2 * w), y03 = TL.Load(qq + 3 * w);
                qq += d;
                TV y10 = TL.Load(qq), y11 = TL.Load(qq + w), y12 = TL.Load(qq + 2 * w), y13 = TL.Load(qq + 3 * w);
                qq += d;
                TV y20 = TL.Load(qq), y21 = TL.Load(qq + w), y22 = TL.Load(qq + 2 * w), y23 = TL.Load(qq + 3 * w);
                qq += d;
                TV y30 = TL.Load(qq), y31 = TL.Load(qq + w), y32 = TL.Load(qq + 2 * w), y33 = TL.Load(qq + 3 * w);
                for (int j = 0; j < n; j += 2)
                {
                    if (g0 == 0 && spread > 0) prefetch.Next(keyPool, valuePool, rowFloats);
                    float* k0 = keys + rows[j], k1 = keys + rows[Math.Min(j + 1, n - 1)];
                    TV x0 = TL.Load(k0), x1 = TL.Load(k1);
                    TV z = TL.Zero; // an FMA into zero, as the tiles below start (a product alone could differ in a zero's sign)
                    TV a00 = TL.MultiplyAdd(y00, x0, z), a01 = TL.MultiplyAdd(y00, x1, z), a10 = TL.MultiplyAdd(y10, x0, z), a11 = TL.MultiplyAdd(y10, x1, z);
                    TV a20 = TL.MultiplyAdd(y20, x0, z), a21 = TL.MultiplyAdd(y20, x1, z), a30 = TL.MultiplyAdd(y30, x0, z), a31 = TL.MultiplyAdd(y30, x1, z);
                    x0 = TL.Load(k0 + w); x1 = TL.Load(k1 + w);
                    a00 = TL.MultiplyAdd(y01, x0, a00); a01 = TL.MultiplyAdd(y01, x1, a01); a10 = TL.MultiplyAdd(y11, x0, a10); a11 = TL.MultiplyAdd(y11, x1, a11);
                    a20 = TL.MultiplyAdd(y21, x0, a20); a21 = TL.MultiplyAdd(y21, x1, a21); a30 = TL.MultiplyAdd(y31, x0, a30); a31 = TL.MultiplyAdd(y31, x1, a31);
                    x0 = TL.Load(k0 + 2 * w); x1 = TL.Load(k1 + 2 * w);
                    a00 = TL.MultiplyAdd(y02, x0, a00); a01 = TL.MultiplyAdd(y02, x1, a01); a10 = TL.MultiplyAdd(y12, x0, a10); a11 = TL.MultiplyAdd(y12, x1, a11);
                    a20 = TL.MultiplyAdd(y22, x0, a20); a21 = TL.MultiplyAdd(y22, x1, a21); a30 = TL.MultiplyAdd(y32, x0, a30); a31 = TL.MultiplyAdd(y32, x1, a31);
                    x0 = TL.Load(k0 + 3 * w); x1 = TL.Load(k1 + 3 * w);
                    a00 = TL.MultiplyAdd(y03, x0, a00); a01 = TL.MultiplyAdd(y03, x1, a01); a10 = TL.MultiplyAdd(y13, x0, a10); a11 = TL.MultiplyAdd(y13, x1, a11);
                    a20 = TL.MultiplyAdd(y23, x0, a20); a21 = TL.MultiplyAdd(y23, x1, a21); a30 = TL.MultiplyAdd(y33, x0, a30); a31 = TL.MultiplyAdd(y33, x1, a31);
                    float* s0 = s + g0 * KeyBlock + j;
                    Lanes256.StoreTileSums(TileHalf(a00), TileHalf(a01), TileHalf(a10), TileHalf(a11), TileHalf(a20), TileHalf(a21), TileHalf(a30), TileHalf(a31),
                        s0, s0 + KeyBlock, s0 + 2 * KeyBlock, s0 + 3 * KeyBlock);
                }
            }
        for (; g0 + 4 <= groups; g0 += 4)
        {
            float* q0 = q + g0 * d, q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
            float* l0 = lanes, l1 = l0 + w * w, l2 = l1 + w * w, l3 = l2 + w * w;
            for (int j0 = 0; j0 < n; j0 += w)
            {
                for (int t = 0; t < w; t += 2)
                {
                    float* k0 = keys + rows[Math.Min(j0 + t, n - 1)];
                    float* k1 = keys + rows[Math.Min(j0 + t + 1, n - 1)];
                    if (g0 == 0 && spread > 0) prefetch.Next(keyPool, valuePool, rowFloats);
                    TV a00 = TL.Zero, a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                    for (int c = 0; c < d; c += w)
                    {
                        TV x0 = TL.Load(k0 + c), x1 = TL.Load(k1 + c), y = TL.Load(q0 + c);
                        a00 = TL.MultiplyAdd(y, x0, a00);
                        a01 = TL.MultiplyAdd(y, x1, a01);
                        y = TL.Load(q1 + c);
                        a10 = TL.MultiplyAdd(y, x0, a10);
                        a11 = TL.MultiplyAdd(y, x1, a11);
                        y = TL.Load(q2 + c);
                        a20 = TL.MultiplyAdd(y, x0, a20);
                        a21 = TL.MultiplyAdd(y, x1, a21);
                        y = TL.Load(q3 + c);
                        a30 = TL.MultiplyAdd(y, x0, a30);
                        a31 = TL.MultiplyAdd(y, x1, a31);
                    }
                    if (typeof(TL) == typeof(Lanes256) || typeof(TL) == typeof(Lanes512))
                    {
                        // AVX2: the tile's sums straight from registers (same summation order as SumEach). AVX-512: each
                        // accumulator's two halves added first, then the same; against storing the lanes for SumEach,
                        // 5-10 % less time per call for eight sequences over one context (see TileHalf).
                        float* s0 = s + g0 * KeyBlock + j0 + t;
                        Lanes256.StoreTileSums(TileHalf(a00), TileHalf(a01), TileHalf(a10), TileHalf(a11), TileHalf(a20), TileHalf(a21), TileHalf(a30), TileHalf(a31),
                            s0, s0 + KeyBlock, s0 + 2 * KeyBlock, s0 + 3 * KeyBlock);
                        continue;
                    }
                    TL.Store(l0 + t * w, a00); TL.Store(l0 + (t + 1) * w, a01);
                    TL.Store(l1 + t * w, a10); TL.Store(l1 + (t + 1) * w, a11);
                    TL.Store(l2 + t * w, a20); TL.Store(l2 + (t + 1) * w, a21);
                    TL.Store(l3 + t * w, a30); TL.Store(l3 + (t + 1) * w, a31);
                }
                if (typeof(TL) == typeof(Lanes256) || typeof(TL) == typeof(Lanes512)) continue;
                TL.SumEach(l0, s + g0 * KeyBlock + j0);
                TL.SumEach(l1, s + (g0 + 1) * KeyBlock + j0);
                TL.SumEach(l2, s + (g0 + 2) * KeyBlock + j0);
                TL.SumEach(l3, s + (g0 + 3) * KeyBlock + j0);
            }
        }
        for (int g = g0; g < groups; g++)
        {
            float* qg = q + g * d;
            for (int j0 = 0; j0 < n; j0 += w)
            {
                for (int t = 0; t < w; t++)
                {
                    float* k = keys + rows[Math.Min(j0 + t, n - 1)];
                    TV a0 = TL.Zero, a1 = TL.Zero;
                    int c = 0;
                    for (; c + 2 * w <= d; c += 2 * w)
                    {
                        a0 = TL.MultiplyAdd(TL.Load(qg + c), TL.Load(k + c), a0);
                        a1 = TL.MultiplyAdd(TL.Load(qg + c + w), TL.Load(k + c + w), a1);
                    }
                    for (; c < d; c += w) a0 = TL.MultiplyAdd(TL.Load(qg + c), TL.Load(k + c), a0);
                    TL.Store(lanes + t * w, TL.Add(a0, a1));
                }
                TL.SumEach(lanes, s + g * KeyBlock + j0);
            }
        }
    }

    /// <summary>
    /// A score accumulator as eight lanes of partial sums: itself on AVX2, its two halves added on AVX-512. In registers
    /// this replaced storing the AVX-512 tile's lanes and reducing them 16 keys at a time (SumEach): on an AMD EPYC Zen 4
    /// (`bench prefill --decode-only`, three alternating runs) eight sequences over one context took 1,104-1,193 us per
    /// layer at 8K against 1,167-1,274, and 4,607-4,973 at 32K against 4,965-5,313; batch 1 moved within the noise.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> TileHalf<TV>(TV value) where TV : struct
    {
        if (typeof(TV) == typeof(Vector512<float>))
        {
            var whole = Unsafe.As<TV, Vector512<float>>(ref value);
            return Avx.Add(whole.GetLower(), whole.GetUpper());
        }
        return Unsafe.As<TV, Vector256<float>>(ref value);
    }

    /// <summary>
    /// o0 += Σ_j p0[j·pKey] · v_j and o1 += Σ_j p1[j·pKey] · v_j: OnlineSoftmax.AccumulateRow for two heads over one read
    /// of the values (pKey: 1 for a head's row of weights, the lane count for weights held as [key, lane]).
    /// </summary>
    // Not inlined: inside AttendGroup the JIT kept its row table and pool base on the stack (two reloads per key).
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AccumulateRowPair<TL, TV>(float* p0, float* p1, int pKey, float* values, nint* rows, int n, float* o0, float* o1, int d)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        int c = 0;
        for (; c + 4 * w <= d; c += 4 * w)
        {
            TV a0 = TL.Load(o0 + c), a1 = TL.Load(o0 + c + w), a2 = TL.Load(o0 + c + 2 * w), a3 = TL.Load(o0 + c + 3 * w);
            TV b0 = TL.Load(o1 + c), b1 = TL.Load(o1 + c + w), b2 = TL.Load(o1 + c + 2 * w), b3 = TL.Load(o1 + c + 3 * w);
            for (int j = 0; j < n; j++)
            {
                float* v = values + rows[j] + c;
                TV x0 = TL.Load(v), x1 = TL.Load(v + w), x2 = TL.Load(v + 2 * w), x3 = TL.Load(v + 3 * w);
                TV e = TL.Broadcast(p0[j * pKey]);
                a0 = TL.MultiplyAdd(e, x0, a0);
                a1 = TL.MultiplyAdd(e, x1, a1);
                a2 = TL.MultiplyAdd(e, x2, a2);
                a3 = TL.MultiplyAdd(e, x3, a3);
                e = TL.Broadcast(p1[j * pKey]);
                b0 = TL.MultiplyAdd(e, x0, b0);
                b1 = TL.MultiplyAdd(e, x1, b1);
                b2 = TL.MultiplyAdd(e, x2, b2);
                b3 = TL.MultiplyAdd(e, x3, b3);
            }
            TL.Store(o0 + c, a0); TL.Store(o0 + c + w, a1); TL.Store(o0 + c + 2 * w, a2); TL.Store(o0 + c + 3 * w, a3);
            TL.Store(o1 + c, b0); TL.Store(o1 + c + w, b1); TL.Store(o1 + c + 2 * w, b2); TL.Store(o1 + c + 3 * w, b3);
        }
        for (; c < d; c += w)
        {
            TV a = TL.Load(o0 + c), b = TL.Load(o1 + c);
            for (int j = 0; j < n; j++)
            {
                TV x = TL.Load(values + rows[j] + c);
                a = TL.MultiplyAdd(TL.Broadcast(p0[j * pKey]), x, a);
                b = TL.MultiplyAdd(TL.Broadcast(p1[j * pKey]), x, b);
            }
            TL.Store(o0 + c, a);
            TL.Store(o1 + c, b);
        }
    }

    /// <summary>
    /// AccumulateRowPair for four heads (head h's weight for key j at p[h·pHead + j·pKey]; accumulators o, d apart): 16 vector accumulators, so
    /// only where the CPU has 32 vector registers (AVX-512). Each head's additions run in the same order as in the pair,
    /// so the results are the same bits. On an AMD EPYC Zen 4 (`bench prefill --decode-only`, three alternating runs)
    /// 2-4 % less time per call than two pairs in every case: batch 1 at 512, 8K and 32K keys, and eight sequences over
    /// one context.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AccumulateRowQuad<TL, TV>(float* p, int pHead, int pKey, float* values, nint* rows, int n, float* o, int d)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        float* p1 = p + pHead, p2 = p1 + pHead, p3 = p2 + pHead;
        float* o1 = o + d, o2 = o1 + d, o3 = o2 + d;
        int c = 0;
        for (; c + 4 * w <= d; c += 4 * w)
        {
            TV a0 = TL.Load(o + c), a1 = TL.Load(o + c + w), a2 = TL.Load(o + c + 2 * w), a3 = TL.Load(o + c + 3 * w);
            TV b0 = TL.Load(o1 + c), b1 = TL.Load(o1 + c + w), b2 = TL.Load(o1 + c + 2 * w), b3 = TL.Load(o1 + c + 3 * w);
            TV c0 = TL.Load(o2 + c), c1 = TL.Load(o2 + c + w), c2 = TL.Load(o2 + c + 2 * w), c3 = TL.Load(o2 + c + 3 * w);
            TV d0 = TL.Load(o3 + c), d1 = TL.Load(o3 + c + w), d2 = TL.Load(o3 + c + 2 * w), d3 = TL.Load(o3 + c + 3 * w);
            for (int j = 0; j < n; j++)
            {
                float* v = values + rows[j] + c;
                TV x0 = TL.Load(v), x1 = TL.Load(v + w), x2 = TL.Load(v + 2 * w), x3 = TL.Load(v + 3 * w);
                TV e = TL.Broadcast(p[j * pKey]);
                a0 = TL.MultiplyAdd(e, x0, a0); a1 = TL.MultiplyAdd(e, x1, a1); a2 = TL.MultiplyAdd(e, x2, a2); a3 = TL.MultiplyAdd(e, x3, a3);
                e = TL.Broadcast(p1[j * pKey]);
                b0 = TL.MultiplyAdd(e, x0, b0); b1 = TL.MultiplyAdd(e, x1, b1); b2 = TL.MultiplyAdd(e, x2, b2); b3 = TL.MultiplyAdd(e, x3, b3);
                e = TL.Broadcast(p2[j * pKey]);
                c0 = TL.MultiplyAdd(e, x0, c0); c1 = TL.MultiplyAdd(e, x1, c1); c2 = TL.MultiplyAdd(e, x2, c2); c3 = TL.MultiplyAdd(e, x3, c3);
                e = TL.Broadcast(p3[j * pKey]);
                d0 = TL.MultiplyAdd(e, x0, d0); d1 = TL.MultiplyAdd(e, x1, d1); d2 = TL.MultiplyAdd(e, x2, d2); d3 = TL.MultiplyAdd(e, x3, d3);
            }
            TL.Store(o + c, a0); TL.Store(o + c + w, a1); TL.Store(o + c + 2 * w, a2); TL.Store(o + c + 3 * w, a3);
            TL.Store(o1 + c, b0); TL.Store(o1 + c + w, b1); TL.Store(o1 + c + 2 * w, b2); TL.Store(o1 + c + 3 * w, b3);
            TL.Store(o2 + c, c0); TL.Store(o2 + c + w, c1); TL.Store(o2 + c + 2 * w, c2); TL.Store(o2 + c + 3 * w, c3);
            TL.Store(o3 + c, d0); TL.Store(o3 + c + w, d1); TL.Store(o3 + c + 2 * w, d2); TL.Store(o3 + c + 3 * w, d3);
        }
        for (; c < d; c += w) // a head of whole vectors but not whole groups of four (d = 80 on AVX-512)
        {
            TV a = TL.Load(o + c), b = TL.Load(o1 + c), e = TL.Load(o2 + c), f = TL.Load(o3 + c);
            for (int j = 0; j < n; j++)
            {
                TV x = TL.Load(values + rows[j] + c);
                a = TL.MultiplyAdd(TL.Broadcast(p[j * pKey]), x, a);
                b = TL.MultiplyAdd(TL.Broadcast(p1[j * pKey]), x, b);
                e = TL.MultiplyAdd(TL.Broadcast(p2[j * pKey]), x, e);
                f = TL.MultiplyAdd(TL.Broadcast(p3[j * pKey]), x, f);
            }
            TL.Store(o + c, a); TL.Store(o1 + c, b); TL.Store(o2 + c, e); TL.Store(o3 + c, f);
        }
    }

    /// <summary>
    /// One KV head of a block for r query rows held across the lanes (rp: r rounded up to whole vectors): scores as
    /// [key, lane] (ScoresTransposed, no horizontal sums), the online softmax down each lane (a row's max and sum are
    /// lanes of maxT and sumT; alphaT is scratch), then P·V as the other path's, its weights read a lane apart.
    /// Lane l is query head firstHead + l % G of member l / G; its accumulator row is o + (l / G)·memberFloats + (l % G)·d.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AttendTransposed<TL, TV>(float* qT, float* keys, float* values, nint* rows, int n, int rp, int r, int d,
        float* sT, float* maxT, float* sumT, float* alphaT, float* o, int memberFloats, int groups,
        float* keyPool, float* valuePool, nint* prefetchRows, int prefetchCount, int rowFloats)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        ScoresTransposed<TL, TV>(qT, keys, rows, n, rp, d, sT, keyPool, valuePool, prefetchRows, prefetchCount, rowFloats);
        for (int v = 0; v < rp; v += w)
        {
            TV blockMax = TL.Load(sT + v);
            for (int j = 1; j < n; j++) blockMax = TL.Max(blockMax, TL.Load(sT + j * rp + v));
            TV newMax = TL.Max(blockMax, TL.Load(maxT + v)), sum = TL.Zero;
            for (int j = 0; j < n; j++)
            {
                TV e = TL.ExpShifted(TL.Load(sT + j * rp + v), newMax);
                TL.Store(sT + j * rp + v, e);
                sum = TL.Add(sum, e);
            }
            TL.Store(alphaT + v, newMax);
            for (int lane = v; lane < v + w; lane++)
            {
                // As OnlineSoftmax.Update: a row whose max moved rescales its accumulator by e^(m_old − m_new).
                float before = maxT[lane], after = alphaT[lane];
                float alpha = before == after ? 1f : float.IsNegativeInfinity(before) ? 0f : MathF.Exp(before - after);
                maxT[lane] = after;
                alphaT[lane] = alpha;
                if (alpha == 1f || lane >= r) continue;
                float* row = LaneRow(o, lane, groups, memberFloats, d);
                TV a = TL.Broadcast(alpha);
                for (int c = 0; c < d; c += w) TL.Store(row + c, TL.Multiply(TL.Load(row + c), a));
            }
            TL.Store(sumT + v, TL.MultiplyAdd(TL.Load(sumT + v), TL.Load(alphaT + v), sum));
        }
        int l = 0;
        if (typeof(TL) == typeof(Lanes512) && groups % 4 == 0) // four lanes are four heads of one member: rows d apart
            for (; l + 4 <= r; l += 4)
                AccumulateRowQuad<TL, TV>(sT + l, 1, rp, values, rows, n, LaneRow(o, l, groups, memberFloats, d), d);
        for (; l + 2 <= r; l += 2) // G is even, so both lanes are heads of one member
        {
            float* row = LaneRow(o, l, groups, memberFloats, d);
            AccumulateRowPair<TL, TV>(sT + l, sT + l + 1, rp, values, rows, n, row, row + d, d);
        }
    }

    /// <summary>Lane l's accumulator row: query head l % G (of the KV head's group at o) of member l / G.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* LaneRow(float* o, int lane, int groups, int memberFloats, int d) => o + lane / groups * memberFloats + lane % groups * d;

    /// <summary>
    /// sT[j, lane] = Σ_c qT[c, lane] · k_j[c] over a block's n key rows: each key element broadcast against vectors of
    /// query lanes, four keys × two vectors of lanes per register tile, so each dot product ends in one lane and needs no
    /// horizontal sum. Rows past n within the last tile repeat the last key (the caller reads only the first n).
    /// </summary>
    // Too large to inline, so AggressiveOptimization as Scores: without it a short decode ran it unoptimized (Tier0,
    // every lane helper a call; bench engine 8K batch 8: 408-586 tok/s against 760-886 before this path).
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ScoresTransposed<TL, TV>(float* qT, float* keys, nint* rows, int n, int rp, int d, float* sT,
        float* keyPool, float* valuePool, nint* prefetchRows, int prefetchCount, int rowFloats)
        where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width;
        var prefetch = new PrefetchSpread(prefetchRows, prefetchCount, (n + 3) / 4);
        for (int j0 = 0; j0 < n; j0 += 4)
        {
            prefetch.Next(keyPool, valuePool, rowFloats);
            float* k0 = keys + rows[j0], k1 = keys + rows[Math.Min(j0 + 1, n - 1)];
            float* k2 = keys + rows[Math.Min(j0 + 2, n - 1)], k3 = keys + rows[Math.Min(j0 + 3, n - 1)];
            float* s0 = sT + j0 * rp, s1 = s0 + rp, s2 = s1 + rp, s3 = s2 + rp;
            int v = 0;
            for (; v + 2 * w <= rp; v += 2 * w)
            {
                TV a00 = TL.Zero, a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                float* line = qT + v;
                for (int c = 0; c < d; c++, line += rp)
                {
                    TV y0 = TL.Load(line), y1 = TL.Load(line + w);
                    TV x = TL.Broadcast(k0[c]);
                    a00 = TL.MultiplyAdd(x, y0, a00); a01 = TL.MultiplyAdd(x, y1, a01);
                    x = TL.Broadcast(k1[c]);
                    a10 = TL.MultiplyAdd(x, y0, a10); a11 = TL.MultiplyAdd(x, y1, a11);
                    x = TL.Broadcast(k2[c]);
                    a20 = TL.MultiplyAdd(x, y0, a20); a21 = TL.MultiplyAdd(x, y1, a21);
                    x = TL.Broadcast(k3[c]);
                    a30 = TL.MultiplyAdd(x, y0, a30); a31 = TL.MultiplyAdd(x, y1, a31);
                }
                TL.Store(s0 + v, a00); TL.Store(s0 + v + w, a01);
                TL.Store(s1 + v, a10); TL.Store(s1 + v + w, a11);
                TL.Store(s2 + v, a20); TL.Store(s2 + v + w, a21);
                TL.Store(s3 + v, a30); TL.Store(s3 + v + w, a31);
            }
            for (; v < rp; v += w)
            {
                TV a0 = TL.Zero, a1 = a0, a2 = a0, a3 = a0;
                float* line = qT + v;
                for (int c = 0; c < d; c++, line += rp)
                {
                    TV y = TL.Load(line);
                    a0 = TL.MultiplyAdd(TL.Broadcast(k0[c]), y, a0);
                    a1 = TL.MultiplyAdd(TL.Broadcast(k1[c]), y, a1);
                    a2 = TL.MultiplyAdd(TL.Broadcast(k2[c]), y, a2);
                    a3 = TL.MultiplyAdd(TL.Broadcast(k3[c]), y, a3);
                }
                TL.Store(s0 + v, a0); TL.Store(s1 + v, a1); TL.Store(s2 + v, a2); TL.Store(s3 + v, a3);
            }
        }
    }

    /// <summary>
    /// Spreads <c>count</c> prefetch rows evenly over <c>steps</c> calls of <see cref="Next"/>: by the end of call t,
    /// (t + 1)·count / steps rows are out, kept as a running quotient and remainder instead of a division per call.
    /// </summary>
    private struct PrefetchSpread(nint* rows, int count, int steps)
    {
        private int _issued, _due, _remainder;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Next(float* keys, float* values, int rowFloats)
        {
            for (_remainder += count; _remainder >= steps; _remainder -= steps) _due++;
            for (; _issued < _due; _issued++) PrefetchRow(keys, values, rows[_issued], rowFloats);
        }
    }

    /// <summary>Prefetches the key and value rows (<paramref name="floats"/> each) at element <paramref name="offset"/> of the pools into L2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchRow(float* keys, float* values, nint offset, int floats)
    {
        byte* k = (byte*)(keys + offset), v = (byte*)(values + offset);
        for (int line = 0; line < floats * sizeof(float); line += 64)
        {
            Prefetch(k + line);
            Prefetch(v + line);
        }
    }

    /// <summary>A hint to bring a line into L2; a no-op on CPUs without SSE (the portable path elsewhere).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* line)
    {
        if (Sse.IsSupported) Sse.Prefetch1(line);
    }

    /// <summary>Merges the parts of a sequence cut in several (all its heads) into its output row.</summary>
    private static void MergeSequence(void* context, int seq)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        int first = job.PartStarts[seq], parts = job.PartStarts[seq + 1] - first;
        if (parts == 1) return;
        int heads = job.Heads, d = job.HeadDim;
        AttentionMerge.MergeContiguous(
            new ReadOnlySpan<float>(job.PartOutputs + (long)first * heads * d, parts * heads * d),
            new ReadOnlySpan<float>(job.PartLogSumExps + (long)first * heads, parts * heads),
            parts, heads, d,
            new Span<float>(job.Output + (long)seq * heads * d, heads * d),
            job.LogSumExp == null ? default : new Span<float>(job.LogSumExp + (long)seq * heads, heads));
    }

    /// <summary>e^x for the softmax range (x ≤ 0), exactly 0 below −87: the AVX2 lanes' exp (see AttentionLanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp(Vector256<float> x) => Lanes256.ExpShifted(x, Vector256<float>.Zero);
}
