// The router's own share of a request's latency, measured in-process on the
// router's placement path with its real libraries: tokenize the prompt text
// (Core's HfTokenizer, the model's tokenizer.json), hash its blocks (Core's
// BlockHasher), match it against a PrefixIndex holding 1,000 cached prefixes
// spread over 4 workers (each prefix on one worker, every 10th on a second
// one as well), and let the policy choose (Platform.Router.Policies).
//
// Each iteration picks a cached prefix at random, appends a fresh user turn
// and times the whole path with a Stopwatch; the first 10 % are warm-up and are
// not counted. Three trials per policy; the one with the lowest p99 is kept,
// because on 2 cores shared with other processes the tail of a trial is mostly
// the OS scheduling something else (the kernels benchmark keeps its best trial
// for the same reason); every trial's p99 is reported too. Each iteration's
// thread CPU time (CLOCK_THREAD_CPUTIME_ID) is recorded as well: it leaves out
// the time the thread sat descheduled while other processes ran, but keeps
// garbage collections this thread performed, so its p99 is the path's own cost.
// The split into tokenize and the rest (hash + index match + policy) shows
// where the time goes; a completions request with token ids skips the first.
// Besides the percentiles it reports how often kv-aware chose a
// worker that holds the prompt's prefix (a check that the index was really
// exercised, not just timed empty).
using System.Diagnostics;
using System.Runtime.InteropServices;
using Platform.Core.Hashing;
using Platform.Core.KvEvents;
using Platform.Core.Tokenization;
using Platform.Router.Policies;

namespace Platform.Bench.Router;

public sealed record OverheadResult(string Policy, int CachedPrefixes, int IndexBlocks, int Workers, int PromptTokens, int Iterations,
    double P50Ms, double P99Ms, double MaxMs, double CpuP50Ms, double CpuP99Ms, double TokenizeP50Ms, double TokenizeP99Ms, double PlaceP50Ms, double PlaceP99Ms,
    double ChoseHolderFraction, double[] TrialP99Ms);

public static partial class PlacementOverheadBench
{
    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);

    /// <summary>CPU time this thread has used, in nanoseconds.</summary>
    private static long ThreadCpuNanoseconds()
    {
        const int ClockThreadCpuTimeId = 3;
        return ClockGetTime(ClockThreadCpuTimeId, out var t) == 0 ? t.Seconds * 1_000_000_000 + t.Nanoseconds : 0;
    }

    public static IReadOnlyList<OverheadResult> Run(string modelDir, IReadOnlyList<string> policies, int prefixes, int workers, int prefixTokens,
        int userTokens, int iterations, int seed)
    {
        var tokenizer = HfTokenizer.Load(modelDir);
        var hasher = new BlockHasher(16, seed: 12345);
        var rng = new Random(seed);
        int ordinaryMax = Enumerable.Range(0, tokenizer.VocabSize).First(tokenizer.IsSpecial);

        string RandomText(int tokens) => tokenizer.Decode(Enumerable.Range(0, tokens).Select(_ => rng.Next(0, ordinaryMax)).ToArray());

        var prefixTexts = new string[prefixes];
        var index = new PrefixIndex();
        var held = Enumerable.Range(0, workers).Select(_ => new List<HeldBlock>()).ToArray();
        var holders = new HashSet<string>[prefixes];
        for (int p = 0; p < prefixes; p++)
        {
            prefixTexts[p] = RandomText(prefixTokens);
            var hashes = hasher.HashPrefix(tokenizer.Encode(prefixTexts[p]).ToArray());
            holders[p] = [$"worker-{p % workers}"];
            if (p % 10 == 0) holders[p].Add($"worker-{(p + 1) % workers}");
            foreach (var id in holders[p])
            {
                var list = held[int.Parse(id["worker-".Length..])];
                for (int i = 0; i < hashes.Length; i++) list.Add(new HeldBlock(hashes[i], i == 0 ? BlockHasher.RootParent : hashes[i - 1], KvTier.Device));
            }
        }
        for (int w = 0; w < workers; w++) index.ApplySnapshot($"worker-{w}", 1, held[w]);
        var userTexts = Enumerable.Range(0, 64).Select(_ => " " + RandomText(userTokens)).ToArray();
        var states = Enumerable.Range(0, workers).Select(w =>
        {
            var s = new WorkerState($"worker-{w}");
            s.ReportLoad(new WorkerLoad(Running: 1 + w % 2, Waiting: w % 3, QueuedPrefillTokens: 128 * w, KvBlocksUsed: 64 + 16 * w, KvBlocksTotal: 4096));
            return s;
        }).ToArray();

        var results = new List<OverheadResult>();
        foreach (var name in policies)
        {
            var policy = PlacementPolicies.Create(new PlacementOptions { Policy = name }, index, new SystemRandomSource(seed));
            OverheadResult? best = null;
            var trialP99 = new List<double>();
            for (int trial = 0; trial < 3; trial++)
            {
                var r = Trial(name, policy, iterations);
                trialP99.Add(r.P99Ms);
                if (best is null || r.P99Ms < best.P99Ms) best = r;
            }
            results.Add(best! with { TrialP99Ms = [.. trialP99] });
        }
        return results;

        OverheadResult Trial(string name, IPlacementPolicy policy, int count)
        {
            int warm = count / 10;
            var total = new List<double>(count);
            var tokenize = new List<double>(count);
            var cpu = new List<double>(count);
            var place = new List<double>(count);
            int choseHolder = 0, measured = 0, promptTokens = 0;
            for (int i = 0; i < warm + count; i++)
            {
                int p = rng.Next(prefixes);
                string text = prefixTexts[p] + userTexts[i % userTexts.Length];
                long cpuStart = ThreadCpuNanoseconds();
                long start = Stopwatch.GetTimestamp();
                var tokens = tokenizer.Encode(text);
                long tokenized = Stopwatch.GetTimestamp();
                var array = tokens as int[] ?? tokens.ToArray();
                var request = new PlacementRequest(hasher.HashPrefix(array), array.Length, hasher.BlockSize);
                var placed = policy.Place(request, states);
                long end = Stopwatch.GetTimestamp();
                long cpuEnd = ThreadCpuNanoseconds();
                if (i < warm) continue;
                cpu.Add((cpuEnd - cpuStart) / 1e6);
                measured++;
                promptTokens = array.Length;
                total.Add(Stopwatch.GetElapsedTime(start, end).TotalMilliseconds);
                tokenize.Add(Stopwatch.GetElapsedTime(start, tokenized).TotalMilliseconds);
                place.Add(Stopwatch.GetElapsedTime(tokenized, end).TotalMilliseconds);
                if (placed.Worker is { } chosen && holders[p].Contains(chosen.Id)) choseHolder++;
            }
            return new OverheadResult(name, prefixes, index.BlockCount, workers, promptTokens, measured,
                Percentiles.Of(total, 0.5), Percentiles.Of(total, 0.99), total.Max(), Percentiles.Of(cpu, 0.5), Percentiles.Of(cpu, 0.99),
                Percentiles.Of(tokenize, 0.5), Percentiles.Of(tokenize, 0.99), Percentiles.Of(place, 0.5), Percentiles.Of(place, 0.99),
                (double)choseHolder / measured, []);
        }
    }
}
