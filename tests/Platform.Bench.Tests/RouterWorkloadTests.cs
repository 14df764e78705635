// The router benchmark's inputs and its yardstick: the shared-prefix workload
// generator (seeded, follow-ups extend the previous prompt, Poisson arrivals)
// and the oracle simulation on hand-built traces whose hit counts are worked
// out by hand in the comments.
using Platform.Bench.Router;

namespace Platform.Bench.Tests;

public sealed class RouterWorkloadTests
{
    private static readonly WorkloadOptions Small = new()
    {
        Groups = 3, ConversationsPerGroup = 2, SystemPromptTokens = 40, Turns = 3, UserTurnTokens = 5, OutputTokens = 4, Rate = 2.0, Seed = 7, TokenMax = 1000,
    };

    [Fact]
    public void Same_seed_gives_the_same_trace_and_another_seed_a_different_one()
    {
        var a = SharedPrefixWorkload.Generate(Small);
        var b = SharedPrefixWorkload.Generate(Small);
        var c = SharedPrefixWorkload.Generate(Small with { Seed = 8 });
        Assert.Equal(3 * 2 * 3, a.Count);
        Assert.Equal(a.Select(r => r.ArrivalSeconds), b.Select(r => r.ArrivalSeconds));
        Assert.Equal(a.Select(r => (r.Conversation, r.Turn)), b.Select(r => (r.Conversation, r.Turn)));
        for (int i = 0; i < a.Count; i++) Assert.Equal(a[i].Prompt, b[i].Prompt);
        Assert.NotEqual(a[0].Prompt, c[0].Prompt);
    }

    [Fact]
    public void Follow_up_turns_extend_the_previous_prompt_by_its_answer_and_a_new_user_turn()
    {
        var trace = SharedPrefixWorkload.Generate(Small);
        foreach (var r in trace)
        {
            if (r.Turn == 0)
            {
                Assert.Equal(-1, r.PreviousTurn);
                Assert.Equal(Small.SystemPromptTokens + Small.UserTurnTokens, r.Prompt.Length);
                continue;
            }
            var previous = trace[r.PreviousTurn];
            Assert.True(previous.Index < r.Index && previous.ArrivalSeconds < r.ArrivalSeconds);
            Assert.Equal((r.Conversation, r.Turn - 1), (previous.Conversation, previous.Turn));
            Assert.Equal(previous.Prompt.Length + Small.OutputTokens + Small.UserTurnTokens, r.Prompt.Length);
            Assert.Equal(previous.Prompt, r.Prompt[..previous.Prompt.Length]);
        }
        // One system prompt per group: shared inside a group, different across groups.
        var system = trace.GroupBy(r => r.Group).ToDictionary(g => g.Key, g => g.Select(r => r.Prompt[..Small.SystemPromptTokens]).ToList());
        foreach (var (_, prompts) in system) Assert.All(prompts, p => Assert.Equal(prompts[0], p));
        Assert.NotEqual(system[0][0], system[1][0]);
        // Different conversations of one group part right after the system prompt.
        var firsts = trace.Where(r => r.Group == 0 && r.Turn == 0).ToList();
        Assert.NotEqual(firsts[0].Prompt[Small.SystemPromptTokens..], firsts[1].Prompt[Small.SystemPromptTokens..]);
        Assert.All(trace, r => Assert.All(r.Prompt, t => Assert.InRange(t, 0, 999)));
    }

    [Fact]
    public void Arrivals_are_increasing_with_mean_gap_one_over_the_rate_and_truncation_keeps_the_head()
    {
        var trace = SharedPrefixWorkload.Generate(Small with { Groups = 50, ConversationsPerGroup = 10, Turns = 4, SystemPromptTokens = 4, Rate = 5.0 });
        for (int i = 1; i < trace.Count; i++) Assert.True(trace[i].ArrivalSeconds > trace[i - 1].ArrivalSeconds);
        double meanGap = trace[^1].ArrivalSeconds / trace.Count;
        Assert.InRange(meanGap, 0.2 * 0.93, 0.2 * 1.07); // 2,000 exponential gaps: the mean is within ~2 % (1 sigma) of 1/rate.

        var head = SharedPrefixWorkload.Truncate(trace, 100, null);
        Assert.Equal(trace.Take(100).Select(r => r.Index), head.Select(r => r.Index));
        var early = SharedPrefixWorkload.Truncate(trace, null, 10.0);
        Assert.All(early, r => Assert.True(r.ArrivalSeconds <= 10.0));
        Assert.Equal(trace.Count(r => r.ArrivalSeconds <= 10.0), early.Count);
    }

    // Hand-built traces with block size 4. X and Y are two different 8-token (2-block) prefixes.
    private static readonly int[] X = [1, 2, 3, 4, 5, 6, 7, 8];
    private static readonly int[] Y = [11, 12, 13, 14, 15, 16, 17, 18];

    private static WorkloadRequest Req(int index, int[] prompt, int maxTokens = 1) => new(index, 0, index, 0, index, prompt, maxTokens, -1);

    [Fact]
    public void Unbounded_oracle_counts_leading_blocks_seen_before_and_always_leaves_the_last_token()
    {
        var trace = new[]
        {
            Req(0, [.. X, 100]),      // 9 tokens, nothing cached yet: 0
            Req(1, [.. X, 101, 102]), // 10 tokens, both X blocks cached: 8
            Req(2, [.. X]),           // exactly X: only (8 − 1) / 4 = 1 block may be reused: 4
            Req(3, [.. Y, 100]),      // new prefix: 0
            Req(4, [99, .. X, 1]),    // X shifted by one token: different chain, 0
        };
        var result = PrefixCacheOracle.Unbounded(trace, blockSize: 4);
        Assert.Equal(9 + 10 + 8 + 9 + 10, result.PromptTokens);
        Assert.Equal(0 + 8 + 4 + 0 + 0, result.CachedTokens);
        Assert.Equal(12.0 / 46, result.HitRate, 12);
    }

    [Fact]
    public void Per_worker_oracle_places_each_prefix_where_it_is_cached()
    {
        // Two workers of 3 blocks: X goes to worker 0 (tie, lowest index), Y to worker 1 (tie, fewer tokens),
        // and each follow-up to the worker holding its prefix: 8 + 8 cached.
        var trace = new[] { Req(0, [.. X, 100]), Req(1, [.. Y, 100]), Req(2, [.. X, 101, 102]), Req(3, [.. Y, 101, 102]) };
        var result = PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 2, blocksPerWorker: 3);
        Assert.Equal(16, result.CachedTokens);
        Assert.Equal(38, result.PromptTokens);
        // One worker of 2 blocks holds one prefix at a time: X, Y, X, Y alternate and every request misses.
        var single = PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 1, blocksPerWorker: 2);
        Assert.Equal(0, single.CachedTokens);
        // With 4 blocks both fit.
        Assert.Equal(16, PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 1, blocksPerWorker: 4).CachedTokens);
    }

    [Fact]
    public void Per_worker_oracle_evicts_output_blocks_before_the_prompt_that_led_them()
    {
        // 9-token prompt + 8 output tokens: (9 + 8 − 1) / 4 = 4 computed blocks, X's two and two holding output.
        // In 3 blocks, freed tail first, the last output block is evicted and X survives: the follow-up hits 8.
        var trace = new[] { Req(0, [.. X, 100], maxTokens: 8), Req(1, [.. X, 101, 102]) };
        Assert.Equal(8, PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 1, blocksPerWorker: 3).CachedTokens);
        // With 2 blocks the output blocks are the ones evicted (they were freed first): still 8.
        Assert.Equal(8, PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 1, blocksPerWorker: 2).CachedTokens);
        // With one block only the first block of X survives.
        Assert.Equal(4, PrefixCacheOracle.PerWorkerLru(trace, blockSize: 4, workers: 1, blocksPerWorker: 1).CachedTokens);
    }
}
