// The scheduler's budget policy, without a model: steps are simulated (plan,
// commit, append a token to every request whose tokens are all computed), so
// each property is checked exactly, step by step. Decodes go first, a short
// prompt arriving during a long prefill is admitted at once, the long prefill
// keeps its share under a flood of short ones, the step cost bound shrinks
// chunks at long context and not at short, and preemption never takes a
// request that is already part of the step.
using System.Threading.Channels;
using Platform.Core.Hashing;
using Platform.Engine.KvCache;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class SchedulerTests
{
    // Roughly the small preset's costs (hidden 512, 4 layers, 8 heads of 64).
    private const double Linear = 22.6e6;
    private const double Attention = 4.0 * 4 * 8 * 64;

    private static int _ids;

    private static EngineRequest Request(int promptLength)
    {
        int id = Interlocked.Increment(ref _ids);
        var sampling = new SamplingParams { MaxTokens = 100_000, IgnoreEos = true };
        var prompt = Enumerable.Range(0, promptLength).Select(i => (i * 31 + id * 977) % 50_000).ToList();
        return new EngineRequest($"r{id}", prompt, sampling, 1, 1_000_000, false, Channel.CreateUnbounded<GenerationChunk>().Writer,
            new OutputProcessor(sampling, new HashSet<int>(), null), id);
    }

    private static Scheduler Make(int blocks, int maxBatchTokens = 512, StepCostModel? cost = null, int maxRunning = 64) =>
        new(new KvCacheManager(new BlockPool(blocks, new KvEventLog()), new BlockHasher(16, 1)), maxBatchTokens, maxRunning, cost);

    /// <summary>One simulated step: plan, commit, and a sampled token for every request that computed all its tokens.</summary>
    private static List<ScheduledRequest> Step(Scheduler s)
    {
        var impossible = new List<EngineRequest>();
        var scheduled = s.Schedule(impossible).ToList();
        Assert.Empty(impossible);
        Assert.All(scheduled, x => Assert.Equal(RequestStatus.Running, x.Request.Status));
        Assert.Equal(scheduled.Count, scheduled.Select(x => x.Request).Distinct().Count());
        s.Commit(scheduled);
        foreach (var x in scheduled)
            if (x.Request.NumComputed == x.Request.Tokens.Count) x.Request.Tokens.Add(7);
        return scheduled;
    }

    private static int TokensOf(List<ScheduledRequest> step, EngineRequest r) => step.Where(x => x.Request == r).Sum(x => x.NumTokens);

    [Fact]
    public void A_running_decode_is_scheduled_every_step_while_a_long_prompt_prefills()
    {
        var s = Make(blocks: 4096);
        var shortOne = Request(16);
        s.Add(shortOne);
        Step(s);
        Assert.Equal(17, shortOne.Tokens.Count);
        var longOne = Request(20_000);
        s.Add(longOne);
        for (int i = 0; i < 30; i++)
        {
            var step = Step(s);
            Assert.Equal(1, TokensOf(step, shortOne));
            Assert.Equal(step[0].Request, shortOne);  // decodes first
            Assert.True(TokensOf(step, longOne) > 0);
        }
        Assert.True(longOne.NumComputed >= 30 * 496, $"the long prompt computed {longOne.NumComputed} tokens in 30 steps");
    }

    [Fact]
    public void A_short_prompt_arriving_mid_prefill_is_admitted_in_the_next_step_and_the_long_one_keeps_going()
    {
        var s = Make(blocks: 4096);
        var longOne = Request(20_000);
        s.Add(longOne);
        for (int i = 0; i < 5; i++) Assert.Equal(512, TokensOf(Step(s), longOne));  // alone: the whole budget
        var shortOne = Request(40);
        s.Add(shortOne);
        var step = Step(s);
        Assert.Equal(40, TokensOf(step, shortOne));
        Assert.Equal(41, shortOne.Tokens.Count);  // its first token after one step
        Assert.True(TokensOf(step, longOne) >= 256);
        Assert.True(step.Sum(x => x.NumTokens) > 512 - 16, "what the short one left goes back to the long one");
        step = Step(s);
        Assert.Equal(1, TokensOf(step, shortOne));
        Assert.True(TokensOf(step, longOne) > 511 - 16);
    }

    [Fact]
    public void A_long_prefill_keeps_progressing_under_a_flood_of_short_prompts()
    {
        var s = Make(blocks: 8192, maxRunning: 1000);
        var cost = new StepCostModel(Linear, Attention, TimeSpan.FromMilliseconds(500));
        var bounded = Make(blocks: 8192, cost: cost, maxRunning: 1000);
        cost.SetRate(25e9);
        foreach (var scheduler in new[] { s, bounded })
        {
            var longOne = Request(16_000);
            scheduler.Add(longOne);
            Step(scheduler);
            for (int i = 0; i < 40; i++)
            {
                for (int k = 0; k < 20; k++) scheduler.Add(Request(48));  // far more than a step can admit
                int before = longOne.NumComputed;
                var step = Step(scheduler);
                Assert.True(longOne.NumComputed - before >= scheduler.MinChunkTokens, $"step {i}: the long prefill made {longOne.NumComputed - before} tokens of progress");
                Assert.Contains(step, x => x.Request.PromptLength == 48 && x.NumTokens == 48);  // and short ones still get in
            }
        }
    }

    [Fact]
    public void The_step_cost_bound_shrinks_chunks_at_long_context_and_leaves_them_whole_at_short()
    {
        var cost = new StepCostModel(Linear, Attention, TimeSpan.FromMilliseconds(500));
        var s = Make(blocks: 4096, cost: cost);
        var longOne = Request(40_000);
        s.Add(longOne);
        // No measurement yet: no bound beyond the tokens.
        Assert.Equal(512, TokensOf(Step(s), longOne));
        cost.SetRate(50e9);
        double budget = cost.StepFlopBudget;
        var sizes = new List<(int Context, int Tokens)>();
        while (longOne.NumComputed < 32_000)
        {
            int context = longOne.NumComputed;
            int n = TokensOf(Step(s), longOne);
            sizes.Add((context, n));
            Assert.True(n >= s.MinChunkTokens);
            Assert.True(n == 512 || cost.ChunkFlops(n, context) <= budget, $"at {context}: {n} tokens cost {cost.ChunkFlops(n, context):E2} > {budget:E2}");
            Assert.True(n == 512 || cost.ChunkFlops(n + 32, context) > budget, $"at {context}: {n} tokens leave a block or more of the budget unused");
            Assert.Equal(0, longOne.NumComputed % 16);  // cut chunks end on block boundaries
        }
        Assert.Equal(512, sizes.First().Tokens);  // at short context the token cap binds
        Assert.InRange(sizes.Last().Tokens, 16, 128);  // near 32K the cost does: ~85 tokens for 25 Gflop
        Assert.True(sizes.Zip(sizes.Skip(1)).All(p => p.Second.Tokens <= p.First.Tokens), "chunks never grow as the context grows");

        // A slower measured rate shrinks chunks at short context too; a faster one grows them back to the cap.
        var fresh = Request(20_000);
        var slow = Make(blocks: 4096, cost: new StepCostModel(Linear, Attention, TimeSpan.FromMilliseconds(100)));
        slow.Cost.SetRate(25e9);
        slow.Add(fresh);
        int small = TokensOf(Step(slow), fresh);
        Assert.InRange(small, 16, 511);
        slow.Cost.SetRate(1e12);
        Assert.Equal(512, TokensOf(Step(slow), fresh));
    }

    [Fact]
    public void The_rate_is_learned_from_observed_steps()
    {
        var cost = new StepCostModel(Linear, Attention, TimeSpan.FromMilliseconds(500));
        Assert.True(double.IsPositiveInfinity(cost.StepFlopBudget));
        cost.Observe(10e9, TimeSpan.FromSeconds(1));
        Assert.Equal(10e9, cost.FlopsPerSecond);
        for (int i = 0; i < 50; i++) cost.Observe(20e9, TimeSpan.FromSeconds(1));
        Assert.InRange(cost.FlopsPerSecond!.Value, 19.9e9, 20e9);
        Assert.InRange(cost.StepFlopBudget, 9.9e9, 10e9);
        var untimed = new StepCostModel(Linear, Attention, TimeSpan.Zero);
        untimed.Observe(10e9, TimeSpan.FromSeconds(1));
        Assert.True(double.IsPositiveInfinity(untimed.StepFlopBudget));
    }

    [Fact]
    public void Preemption_takes_the_last_request_outside_the_step_never_one_already_in_it()
    {
        // 10 blocks of 16: a decoding request admitted after a long prompt is scheduled first each step; when the
        // long prefill then runs out of blocks, the victim must be the long one itself, not the decode in the step.
        var s = Make(blocks: 10, maxBatchTokens: 32);
        var longOne = Request(150);
        var decode = Request(16);
        s.Add(longOne);
        s.Add(decode);
        for (int i = 0; i < 40; i++)
        {
            var step = Step(s);
            if (decode.OutputLength > 0 && decode.Status == RequestStatus.Running) Assert.Contains(step, x => x.Request == decode);
        }
        Assert.True(s.TotalPreemptions > 0, "the pool should have run out");
        Assert.Equal(0, decode.Preemptions);
        Assert.True(longOne.Preemptions > 0);

        // Three decodes that each need a new block with one free: the second one's victim is the third (the last
        // outside the step), never the first (already in it); nothing is admitted in a step that preempted.
        var t = Make(blocks: 7, maxBatchTokens: 96);
        var a = Request(32);
        var b = Request(32);
        var c = Request(32);
        t.Add(a);
        t.Add(b);
        t.Add(c);
        Step(t);  // 2 + 2 + 2 blocks; at 33 tokens each needs a third to decode
        var late = Request(16);
        t.Add(late);
        var step2 = Step(t);
        Assert.Equal([a, b], step2.Select(x => x.Request));
        Assert.Equal((0, 0, 1), (a.Preemptions, b.Preemptions, c.Preemptions));
        Assert.Equal((RequestStatus.Waiting, RequestStatus.Waiting), (c.Status, late.Status));
    }
}
