// The tiled prefill kernel (FlashAttention) and the split decode kernel
// (PagedAttention) against a float64 softmax attention written here in plain
// loops: random block tables with shuffled blocks and a partial last block,
// GQA ratios 1, 4 and 8, head sizes 64 and 128, contexts from 1 to 5,000 keys,
// chunks that follow earlier context, sliding windows on and off, on every
// vector path this CPU has (the ones it lacks are named in the test output).
using Platform.Engine.Kernels;
using Xunit.Abstractions;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class FlashAttentionTests(ITestOutputHelper output)
{
    private const int BlockSize = 16;

    /// <summary>The paths this CPU runs, each with the knobs that select it; the others are reported as skipped.</summary>
    private List<AttentionPath> Paths()
    {
        var paths = new List<AttentionPath> { AttentionPath.Portable };
        if (AttentionKernels.Vector256Supported) paths.Add(AttentionPath.Vector256);
        else output.WriteLine("skipped Vector256: this CPU lacks AVX2/FMA");
        if (AttentionKernels.Vector512Supported) paths.Add(AttentionPath.Vector512);
        else output.WriteLine("skipped Vector512: this CPU lacks AVX-512F");
        return paths;
    }

    private static void Select(AttentionPath path)
    {
        AttentionKernels.ForcePortable = path == AttentionPath.Portable;
        AttentionKernels.ForceVector256 = path == AttentionPath.Vector256;
        Assert.Equal(path, AttentionKernels.ActivePath);
    }

    private static void ResetPath() => (AttentionKernels.ForcePortable, AttentionKernels.ForceVector256) = (false, false);

    /// <summary>A KV pool of <paramref name="blocks"/> blocks and, per sequence, the slots of a random block table.</summary>
    private sealed class Pool
    {
        public required float[] Keys, Values;
        public required int KvHeads, HeadDim;

        public static (Pool Pool, long[][] Slots) Create(Random rng, int kvHeads, int headDim, params int[] lengths)
        {
            int needed = lengths.Sum(l => (l + BlockSize - 1) / BlockSize);
            int blocks = needed + 7;
            var order = Enumerable.Range(0, blocks).OrderBy(_ => rng.Next()).ToArray();
            var slots = new long[lengths.Length][];
            int next = 0;
            for (int s = 0; s < lengths.Length; s++)
            {
                int count = (lengths[s] + BlockSize - 1) / BlockSize;
                var table = order.AsSpan(next, count).ToArray();
                next += count;
                slots[s] = Enumerable.Range(0, lengths[s]).Select(p => (long)table[p / BlockSize] * BlockSize + p % BlockSize).ToArray();
            }
            int rows = blocks * BlockSize * kvHeads * headDim;
            var pool = new Pool { Keys = Random(rng, rows, 1), Values = Random(rng, rows, 1), KvHeads = kvHeads, HeadDim = headDim };
            return (pool, slots);
        }

        public double Key(long slot, int kvHead, int i) => Keys[(slot * KvHeads + kvHead) * HeadDim + i];
        public double Value(long slot, int kvHead, int i) => Values[(slot * KvHeads + kvHead) * HeadDim + i];
    }

    private static float[] Random(Random rng, int n, double amplitude) =>
        Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * amplitude)).ToArray();

    /// <summary>
    /// float64 attention of one query (heads [headDim] at <paramref name="query"/>) over the keys at positions
    /// [first, last] of a sequence; returns the output of head h and its log-sum-exp.
    /// </summary>
    private static (double[] Output, double LogSumExp) Reference(Pool pool, long[] slots, float[] queries, int queryOffset, int kvHead,
        int first, int last, double scale)
    {
        int d = pool.HeadDim;
        var scores = new double[last - first + 1];
        for (int j = first; j <= last; j++)
        {
            double dot = 0;
            for (int i = 0; i < d; i++) dot += queries[queryOffset + i] * pool.Key(slots[j], kvHead, i);
            scores[j - first] = dot * scale;
        }
        double max = scores.Max(), sum = scores.Sum(x => Math.Exp(x - max));
        var result = new double[d];
        for (int j = first; j <= last; j++)
        {
            double p = Math.Exp(scores[j - first] - max) / sum;
            for (int i = 0; i < d; i++) result[i] += p * pool.Value(slots[j], kvHead, i);
        }
        return (result, max + Math.Log(sum));
    }

    [Theory]
    [InlineData(2, 1, 64, 1, 1, 0)]
    [InlineData(2, 4, 64, 37, 37, 0)]
    [InlineData(1, 8, 128, 300, 300, 50)]
    [InlineData(3, 1, 128, 777, 777, 100)]
    [InlineData(2, 4, 128, 1000, 130, 0)]
    [InlineData(2, 1, 64, 2100, 700, 0)]
    [InlineData(1, 4, 64, 5000, 48, 0)]
    [InlineData(2, 8, 64, 5000, 33, 1000)]
    [InlineData(1, 4, 64, 300, 300, 1)]
    public void Prefill_matches_float64_attention(int kvHeads, int groups, int headDim, int context, int queries, int window)
    {
        var rng = new Random(context * 7 + queries + headDim + groups);
        int heads = kvHeads * groups;
        var (pool, slotTables) = Pool.Create(rng, kvHeads, headDim, context);
        var slots = slotTables[0];
        var query = Random(rng, queries * heads * headDim, 2);
        double scale = 1 / Math.Sqrt(headDim);
        int firstPosition = context - queries;

        var expected = new double[queries * heads][];
        for (int qi = 0; qi < queries; qi++)
            for (int h = 0; h < heads; h++)
            {
                int position = firstPosition + qi;
                int lowest = window > 0 ? Math.Max(0, position - window + 1) : 0;
                expected[qi * heads + h] = Reference(pool, slots, query, (qi * heads + h) * headDim, h / groups, lowest, position, scale).Output;
            }

        try
        {
            foreach (var path in Paths())
            {
                Select(path);
                var actual = new float[queries * heads * headDim];
                fixed (float* q = query) fixed (float* k = pool.Keys) fixed (float* v = pool.Values) fixed (long* s = slots) fixed (float* o = actual)
                    FlashAttention.Prefill(q, k, v, s, queries, context, heads, kvHeads, headDim, (float)scale, window, o);
                double worst = 0;
                for (int r = 0; r < queries * heads; r++)
                    for (int i = 0; i < headDim; i++)
                    {
                        double error = Math.Abs(expected[r][i] - actual[r * headDim + i]);
                        Assert.True(error < 2e-5, $"{path}: query {r / heads} head {r % heads} dim {i}: {expected[r][i]} vs {actual[r * headDim + i]}");
                        worst = Math.Max(worst, error);
                    }
                output.WriteLine($"{path}: worst error {worst:E2}");
            }
        }
        finally
        {
            ResetPath();
        }
    }

    /// <summary>
    /// Two engines in one process prefill at the same time from their own step threads: each call's result must be
    /// exactly what it is alone. (Per-call scratch once lived in a process-wide buffer, and one call's keys
    /// overwrote the other's: the router's n-choices test saw identical greedy choices differ.)
    /// </summary>
    [Fact]
    public void Concurrent_prefills_from_two_threads_each_equal_their_result_alone()
    {
        const int kvHeads = 2, groups = 4, headDim = 64, heads = kvHeads * groups;
        var problems = new[] { (Context: 1500, Queries: 400, Seed: 1), (Context: 900, Queries: 300, Seed: 2) }.Select(p =>
        {
            var rng = new Random(p.Seed);
            var (pool, slots) = Pool.Create(rng, kvHeads, headDim, p.Context);
            return (p.Context, p.Queries, Pool: pool, Slots: slots[0], Query: Random(rng, p.Queries * heads * headDim, 2));
        }).ToArray();
        float[] Run(int i)
        {
            var p = problems[i];
            var result = new float[p.Queries * heads * headDim];
            fixed (float* q = p.Query) fixed (float* k = p.Pool.Keys) fixed (float* v = p.Pool.Values) fixed (long* s = p.Slots) fixed (float* o = result)
                FlashAttention.Prefill(q, k, v, s, p.Queries, p.Context, heads, kvHeads, headDim, 0.125f, 0, o);
            return result;
        }

        var alone = new[] { Run(0), Run(1) };
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var start = new Barrier(2);
        var threads = Enumerable.Range(0, 2).Select(i => new Thread(() =>
        {
            for (int round = 0; round < 20; round++)
            {
                start.SignalAndWait();
                if (!Run(i).AsSpan().SequenceEqual(alone[i])) failures.Add($"problem {i}, round {round}");
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.True(failures.IsEmpty, "a concurrent call changed the result of: " + string.Join(", ", failures));
    }

    [Theory]
    [InlineData(1, 1, 64, 0, new[] { 1 })]
    [InlineData(2, 4, 64, 0, new[] { 5000 })]
    [InlineData(2, 8, 128, 0, new[] { 513, 1, 2048, 37 })]
    [InlineData(1, 4, 128, 700, new[] { 4999, 1200, 699, 3 })]
    [InlineData(4, 1, 64, 0, new[] { 1024, 1025, 511, 512 })]
    [InlineData(3, 2, 12, 0, new[] { 40, 600 })]
    [InlineData(2, 4, 80, 0, new[] { 700, 33 })] // a head of 80: whole 16-float vectors, not whole groups of four
    public void Split_decode_matches_float64_attention(int kvHeads, int groups, int headDim, int window, int[] lengths)
    {
        var rng = new Random(lengths.Sum() + headDim * 3 + groups + window);
        int heads = kvHeads * groups, sequences = lengths.Length;
        var (pool, slotTables) = Pool.Create(rng, kvHeads, headDim, lengths);
        var query = Random(rng, sequences * heads * headDim, 2);
        double scale = 1 / Math.Sqrt(headDim);
        // The kernel sees each sequence's window as the engine gives it: its last min(length, window) slots.
        var visible = slotTables.Select(t => window > 0 && t.Length > window ? t[^window..] : t).ToArray();
        var offsets = new int[sequences];
        for (int s = 1; s < sequences; s++) offsets[s] = offsets[s - 1] + visible[s - 1].Length;
        var flat = visible.SelectMany(t => t).ToArray();
        var counts = visible.Select(t => t.Length).ToArray();

        var expected = new (double[] Output, double LogSumExp)[sequences * heads];
        for (int s = 0; s < sequences; s++)
            for (int h = 0; h < heads; h++)
            {
                int last = lengths[s] - 1, first = window > 0 ? Math.Max(0, last - window + 1) : 0;
                expected[s * heads + h] = Reference(pool, slotTables[s], query, (s * heads + h) * headDim, h / groups, first, last, scale);
            }

        try
        {
            foreach (var path in Paths())
            {
                Select(path);
                var (actual, logSumExp) = DecodeAll(pool, query, flat, offsets, counts, heads, scale);
                double worst = 0;
                for (int r = 0; r < sequences * heads; r++)
                    worst = Math.Max(worst, AssertNearReference(path, expected[r], actual, logSumExp, r, heads));
                output.WriteLine($"{path}: worst error {worst:E2}");
            }
        }
        finally
        {
            ResetPath();
        }
    }

    [Theory]
    [InlineData(2, 4, 64, 1500, new[] { 16, 40, 0, 700 })]
    [InlineData(1, 8, 128, 1000, new[] { 5, 300 })]
    [InlineData(2, 1, 64, 512, new[] { 0, 1500 })]
    [InlineData(4, 1, 64, 37, new[] { 0, 0, 3 })]
    // Query rows across the lanes (PagedAttention.AttendTransposed: sequences × G ≥ 16 per KV head): 32 rows (two AVX-512
    // vectors), G = 8 with a head of 128, and G = 2 (lane pairs are heads of one member).
    [InlineData(2, 4, 64, 1100, new[] { 3, 0, 9, 0, 1, 20, 0, 2 })]
    [InlineData(1, 8, 128, 700, new[] { 0, 4, 0, 33 })]
    [InlineData(4, 2, 64, 600, new[] { 1, 0, 0, 7, 0, 0, 0, 2 })]
    public void Decode_of_sequences_sharing_a_prefix_matches_float64_attention(int kvHeads, int groups, int headDim, int shared, int[] suffixes)
    {
        // Sequences whose first `shared` slots are the very same (one prompt's blocks, as n samples of it or
        // requests over one document have), then slots of their own: the kernel reads a part they share once for
        // all of them, and each must still get its own attention. Whole parts shared by k sequences make one
        // work item; a part where they part ways (or a sequence that ends inside it) is one item per sequence.
        var rng = new Random(shared + headDim + suffixes.Sum());
        int heads = kvHeads * groups, sequences = suffixes.Length;
        var lengths = suffixes.Select(x => shared + x).ToArray();
        var (pool, tables) = Pool.Create(rng, kvHeads, headDim, [shared, .. suffixes]);
        var slotTables = suffixes.Select((_, s) => tables[0].Concat(tables[s + 1]).ToArray()).ToArray();
        var query = Random(rng, sequences * heads * headDim, 2);
        double scale = 1 / Math.Sqrt(headDim);
        var offsets = new int[sequences];
        for (int s = 1; s < sequences; s++) offsets[s] = offsets[s - 1] + lengths[s - 1];
        var flat = slotTables.SelectMany(t => t).ToArray();

        // Expected items: per part index, per distinct (end, slots) among the sequences that have that part, one
        // item per MembersPerItem of them. One thread lets items grow (the grouping itself); two split the larger
        // groups so both threads get items.
        int parts = lengths.Sum(length => Math.Max(1, (length + PagedAttention.SplitKeys - 1) / PagedAttention.SplitKeys));
        int savedThreads = KernelThreads.Count;
        try
        {
            foreach (int threads in ThreadCounts)
            {
                KernelThreads.Count = threads;
                int cap = PagedAttention.MembersPerItem(parts, threads);
                int expectedItems = 0;
                for (int l = 0; l < (lengths.Max() + PagedAttention.SplitKeys - 1) / PagedAttention.SplitKeys; l++)
                    expectedItems += Enumerable.Range(0, sequences)
                        .Where(s => l * PagedAttention.SplitKeys < Math.Max(1, lengths[s]))
                        .GroupBy(s =>
                        {
                            int begin = l * PagedAttention.SplitKeys, end = Math.Min(lengths[s], begin + PagedAttention.SplitKeys);
                            return string.Join(',', slotTables[s][begin..end]);
                        })
                        .Sum(group => (group.Count() + cap - 1) / cap);
                foreach (var path in Paths())
                {
                    Select(path);
                    var (actual, logSumExp) = DecodeAll(pool, query, flat, offsets, lengths, heads, scale);
                    Assert.Equal(expectedItems, PagedAttention.LastWorkItems);
                    for (int s = 0; s < sequences; s++)
                        for (int h = 0; h < heads; h++)
                            AssertNearReference(path, Reference(pool, slotTables[s], query, (s * heads + h) * headDim, h / groups, 0, lengths[s] - 1, scale),
                                actual, logSumExp, s * heads + h, heads);
                }
            }
        }
        finally
        {
            KernelThreads.Count = savedThreads;
            ResetPath();
        }
    }

    private static readonly int[] ThreadCounts = [1, 2];

    [Fact]
    public void Identical_sequences_get_the_same_bits_whichever_item_they_fall_in()
    {
        // Ten samples of one 1,500-token prompt: with two threads the cap puts them in items of 7 and 3. Items with
        // enough query rows hold them across the lanes (another order of additions), so the arithmetic must follow
        // the sequences that read the slots, not the item's own count, or greedy samples of one prompt could differ.
        var rng = new Random(7);
        const int kvHeads = 2, groups = 4, headDim = 64, length = 1500, sequences = 10;
        int heads = kvHeads * groups;
        var (pool, tables) = Pool.Create(rng, kvHeads, headDim, length);
        var flat = Enumerable.Repeat(tables[0], sequences).SelectMany(t => t).ToArray();
        var one = Random(rng, heads * headDim, 2);
        var query = Enumerable.Repeat(one, sequences).SelectMany(q => q).ToArray();
        var offsets = Enumerable.Range(0, sequences).Select(s => s * length).ToArray();
        var lengths = Enumerable.Repeat(length, sequences).ToArray();
        int savedThreads = KernelThreads.Count;
        try
        {
            KernelThreads.Count = 2;
            Assert.Equal(7, PagedAttention.MembersPerItem(sequences * 3, 2));
            foreach (var path in Paths())
            {
                Select(path);
                var (actual, logSumExp) = DecodeAll(pool, query, flat, offsets, lengths, heads, 1 / Math.Sqrt(headDim));
                Assert.Equal(3 * 2, PagedAttention.LastWorkItems);
                for (int s = 1; s < sequences; s++)
                {
                    Assert.True(actual.AsSpan(0, heads * headDim).SequenceEqual(actual.AsSpan(s * heads * headDim, heads * headDim)),
                        $"{path}: sequence {s}'s output differs from sequence 0's");
                    Assert.True(logSumExp.AsSpan(0, heads).SequenceEqual(logSumExp.AsSpan(s * heads, heads)), $"{path}: sequence {s}'s log-sum-exp differs");
                }
            }
        }
        finally
        {
            KernelThreads.Count = savedThreads;
            ResetPath();
        }
    }

    /// <summary>PagedAttention.DecodePartial on the selected path: every sequence's output and log-sum-exp per head.</summary>
    private static (float[] Output, float[] LogSumExp) DecodeAll(Pool pool, float[] query, long[] flat, int[] offsets, int[] lengths, int heads, double scale)
    {
        int sequences = lengths.Length, d = pool.HeadDim;
        var actual = new float[sequences * heads * d];
        var logSumExp = new float[sequences * heads];
        fixed (float* q = query) fixed (float* k = pool.Keys) fixed (float* v = pool.Values) fixed (long* sl = flat)
        fixed (int* off = offsets) fixed (int* len = lengths) fixed (float* o = actual) fixed (float* lse = logSumExp)
            PagedAttention.DecodePartial(q, k, v, sl, off, len, sequences, heads, pool.KvHeads, d, (float)scale, o, lse);
        return (actual, logSumExp);
    }

    /// <summary>Row r (sequence r / heads, head r % heads) against the float64 reference; returns its worst output error.</summary>
    private static double AssertNearReference(AttentionPath path, (double[] Output, double LogSumExp) expected, float[] actual, float[] logSumExp, int r, int heads)
    {
        int d = expected.Output.Length;
        Assert.True(Math.Abs(expected.LogSumExp - logSumExp[r]) < 1e-4 * Math.Max(1, Math.Abs(expected.LogSumExp)),
            $"{path}: sequence {r / heads} head {r % heads} log-sum-exp {expected.LogSumExp} vs {logSumExp[r]}");
        double worst = 0;
        for (int i = 0; i < d; i++)
        {
            double error = Math.Abs(expected.Output[i] - actual[r * d + i]);
            Assert.True(error < 2e-5, $"{path}: sequence {r / heads} head {r % heads} dim {i}: {expected.Output[i]} vs {actual[r * d + i]}");
            worst = Math.Max(worst, error);
        }
        return worst;
    }

    [Fact]
    public void Contiguous_merge_equals_the_list_merge()
    {
        var rng = new Random(5);
        int parts = 5, heads = 3, d = 8;
        var outputs = Enumerable.Range(0, parts).Select(_ => Random(rng, heads * d, 1)).ToArray();
        var lses = Enumerable.Range(0, parts).Select(_ => Random(rng, heads, 4)).ToArray();
        lses[2][1] = float.NegativeInfinity;   // a part with no keys for head 1
        var expected = new float[heads * d];
        var expectedLse = new float[heads];
        AttentionMerge.Merge(outputs, lses, heads, d, expected, expectedLse);
        var actual = new float[heads * d];
        var actualLse = new float[heads];
        AttentionMerge.MergeContiguous(outputs.SelectMany(o => o).ToArray(), lses.SelectMany(l => l).ToArray(), parts, heads, d, actual, actualLse);
        Assert.Equal(expected, actual);
        Assert.Equal(expectedLse, actualLse);
    }
}
