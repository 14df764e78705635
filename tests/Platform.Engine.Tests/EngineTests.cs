// Behaviour of the engine as a whole: prefix caching, batching, chunked
// prefill, preemption, cancellation, stop conditions and limits. Each property
// is checked by comparing two runs that must agree (tokens, or logits within
// float tolerance), so a broken scheduler or cache shows up as a difference.
using Platform.Core.KvEvents;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class EngineTests
{
    private static List<int> Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(0, 500)).ToList();
    }

    private static async Task<(List<int> Tokens, List<float[]> Logits, GenerationChunk Last)> Run(LlmEngine engine, IReadOnlyList<int> prompt,
        SamplingParams? sampling = null, CancellationToken ct = default)
    {
        var tokens = new List<int>();
        var logits = new List<float[]>();
        GenerationChunk? last = null;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling ?? new SamplingParams { MaxTokens = 8, Temperature = 0, IgnoreEos = true }, ReturnLogits: true), ct))
        {
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
            last = chunk;
        }
        return (tokens, logits, last!);
    }

    private static void AssertLogitsEqual(List<float[]> a, List<float[]> b, double tolerance = 1e-4)
    {
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            for (int j = 0; j < a[i].Length; j++)
                Assert.True(Math.Abs(a[i][j] - b[i][j]) <= tolerance * Math.Max(1, Math.Abs(a[i][j])), $"step {i} logit {j}: {a[i][j]} vs {b[i][j]}");
    }

    [Fact]
    public async Task Prefix_cache_hit_gives_the_same_logits_as_a_cold_run()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Prompt(100, 1);
        var cold = await Run(engine, prompt);
        Assert.Equal(0, cold.Last.CachedTokens);
        var warm = await Run(engine, prompt);
        Assert.Equal(96, warm.Last.CachedTokens);  // 6 full blocks; the last token always runs
        Assert.Equal(cold.Tokens, warm.Tokens);
        AssertLogitsEqual(cold.Logits, warm.Logits);

        // A different prompt sharing the first 64 tokens reuses exactly those 4 blocks.
        var sibling = prompt.Take(64).Concat(Prompt(30, 2)).ToList();
        var partial = await Run(engine, sibling);
        Assert.Equal(64, partial.Last.CachedTokens);
        using var fresh = TestModels.Engine(TestModels.TinyLlama);
        var reference = await Run(fresh, sibling);
        Assert.Equal(reference.Tokens, partial.Tokens);
        AssertLogitsEqual(reference.Logits, partial.Logits);
        Assert.True(engine.GetStats().PrefixHitBlocks >= 10);
    }

    [Fact]
    public async Task Requests_batched_together_give_the_same_tokens_as_each_alone()
    {
        var prompts = Enumerable.Range(0, 6).Select(i => Prompt(10 + i * 13, 100 + i)).ToList();
        var sampling = new SamplingParams { MaxTokens = 12, Temperature = 0.8, TopP = 0.9, Seed = 42, IgnoreEos = true };
        var alone = new List<List<int>>();
        foreach (var p in prompts)
        {
            using var e = TestModels.Engine(TestModels.TinyLlama);
            alone.Add((await Run(e, p, sampling)).Tokens);
        }
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var together = await Task.WhenAll(prompts.Select(p => Run(engine, p, sampling)));
        for (int i = 0; i < prompts.Count; i++) Assert.Equal(alone[i], together[i].Tokens);
        Assert.True(engine.GetStats().Steps < prompts.Count * 12, "requests should have shared steps");
    }

    [Fact]
    public async Task Chunked_prefill_gives_the_same_logits_as_one_shot_prefill()
    {
        var prompt = Prompt(300, 5);
        using var oneShot = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, MaxBatchTokens = 512, DefaultSeed = 1 });
        using var chunked = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, MaxBatchTokens = 37, DefaultSeed = 1 });
        var a = await Run(oneShot, prompt);
        var b = await Run(chunked, prompt);
        Assert.Equal(a.Tokens, b.Tokens);
        AssertLogitsEqual(a.Logits, b.Logits);
        Assert.True(chunked.GetStats().Steps >= 300 / 37 + 7);
    }

    [Fact]
    public async Task Preempted_and_resumed_requests_give_the_same_tokens()
    {
        var prompts = Enumerable.Range(0, 4).Select(i => Prompt(40, 200 + i)).ToList();
        var sampling = new SamplingParams { MaxTokens = 40, Temperature = 1.0, Seed = 9, IgnoreEos = true };
        using var roomy = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, DefaultSeed = 1 });
        var expected = await Task.WhenAll(prompts.Select(p => Run(roomy, p, sampling)));
        // 4 requests × 80 tokens need 20 blocks; 12 forces preemption and recompute.
        using var tight = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 12, DefaultSeed = 1 });
        var actual = await Task.WhenAll(prompts.Select(p => Run(tight, p, sampling)));
        Assert.True(tight.GetStats().Preemptions > 0, "the tight pool should have preempted");
        for (int i = 0; i < prompts.Count; i++) Assert.Equal(expected[i].Tokens, actual[i].Tokens);
        Assert.Equal(0, await EngineStatsWait.Settle(tight, s => s.KvBlocksUsed));
    }

    [Fact]
    public async Task Cancelling_a_request_frees_its_blocks()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        using var cts = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt(50, 3), new SamplingParams { MaxTokens = 1000, IgnoreEos = true }), cts.Token))
            {
                if (++received == 3) await cts.CancelAsync();
            }
        });
        await WaitFor(() => engine.GetStats() is { Running: 0, Waiting: 0, KvBlocksUsed: 0 });
    }

    [Fact]
    public async Task Breaking_out_of_the_stream_frees_the_request()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        await foreach (var _ in engine.GenerateAsync(new GenerationRequest(Prompt(20, 3), new SamplingParams { MaxTokens = 500, IgnoreEos = true })))
            break;
        await WaitFor(() => engine.GetStats() is { Running: 0, Waiting: 0, KvBlocksUsed: 0 });
    }

    [Fact]
    public async Task Max_tokens_stop_ids_and_stop_strings_end_generation()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Prompt(12, 8);
        var free = await Run(engine, prompt, new SamplingParams { MaxTokens = 20, Temperature = 0, IgnoreEos = true });
        Assert.Equal(20, free.Tokens.Count);
        Assert.Equal(FinishReason.Length, free.Last.Finish);

        int stopAt = free.Tokens[5];
        int firstIndex = free.Tokens.IndexOf(stopAt);
        var byId = await Run(engine, prompt, new SamplingParams { MaxTokens = 20, Temperature = 0, IgnoreEos = true, StopTokenIds = [stopAt] });
        Assert.Equal(free.Tokens.Take(firstIndex + 1), byId.Tokens);
        Assert.Equal(FinishReason.Stop, byId.Last.Finish);

        string fullText = engine.Tokenizer!.Decode(free.Tokens);
        string stop = fullText.Substring(fullText.Length / 2, Math.Min(3, fullText.Length - fullText.Length / 2));
        var texts = new List<string>();
        FinishReason? reason = null;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 20, Temperature = 0, IgnoreEos = true, StopStrings = [stop] })))
        {
            texts.Add(chunk.Text);
            reason = chunk.Finish ?? reason;
        }
        string produced = string.Concat(texts);
        Assert.Equal(FinishReason.Stop, reason);
        Assert.Equal(fullText[..fullText.IndexOf(stop, StringComparison.Ordinal)], produced);
    }

    [Fact]
    public async Task Streamed_text_equals_the_decoded_tokens()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var tokens = new List<int>();
        var text = new System.Text.StringBuilder();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt(9, 4), new SamplingParams { MaxTokens = 30, Temperature = 1, Seed = 3, IgnoreEos = true })))
        {
            tokens.AddRange(chunk.TokenIds);
            text.Append(chunk.Text);
        }
        Assert.Equal(engine.Tokenizer!.Decode(tokens, skipSpecialTokens: true), text.ToString());
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible_and_seeds_differ()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Prompt(10, 1);
        var s1 = new SamplingParams { MaxTokens = 16, Temperature = 1.5, Seed = 1, IgnoreEos = true };
        var a = await Run(engine, prompt, s1);
        var b = await Run(engine, prompt, s1);
        var c = await Run(engine, prompt, s1 with { Seed = 2 });
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.NotEqual(a.Tokens, c.Tokens);
    }

    [Fact]
    public void Requests_that_cannot_be_served_are_rejected_with_a_clear_message()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 8, MaxContextTokens = 1000 });
        var e1 = Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest(Prompt(1000, 1), new SamplingParams())));
        Assert.Contains("at most 1000", e1.Message);
        var e2 = Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest(Prompt(900, 1), new SamplingParams { MaxTokens = 200 })));
        Assert.Contains("lower max_tokens to at most 100", e2.Message);
        var e3 = Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest(Prompt(200, 1), new SamplingParams())));
        Assert.Contains("KV cache", e3.Message);
        Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest([1, 2, 99999], new SamplingParams())));
        Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest([], new SamplingParams())));
        Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest([1], new SamplingParams { Temperature = double.NaN })));
        Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest([1], new SamplingParams { TopP = -1 })));
        Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest([1], new SamplingParams { MaxTokens = 0 })));
    }

    [Fact]
    public async Task Kv_events_report_stored_and_evicted_blocks_with_gap_free_sequence_numbers()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 10, DefaultSeed = 1 });
        var events = new List<KvEvent>();
        using var sub = await engine.SubscribeKvEventsAsync(batch => { lock (events) events.AddRange(batch); });
        Assert.Empty(sub.CachedBlocks);
        await Run(engine, Prompt(64, 1), new SamplingParams { MaxTokens = 1, IgnoreEos = true });
        await Run(engine, Prompt(150, 2), new SamplingParams { MaxTokens = 1, IgnoreEos = true });  // needs all 10 blocks: evicts
        List<KvEvent> seen;
        lock (events) seen = [.. events];
        Assert.Contains(seen, e => e.Kind == KvEventKind.BlockStored);
        Assert.Contains(seen, e => e.Kind == KvEventKind.BlockRemoved);
        for (int i = 0; i < seen.Count; i++) Assert.Equal(sub.SnapshotSequence + i + 1, seen[i].Sequence);
        var stored = seen.Where(e => e.Kind == KvEventKind.BlockStored).Select(e => e.BlockHash).ToHashSet();
        Assert.All(seen.Where(e => e.Kind == KvEventKind.BlockRemoved), e => Assert.Contains(e.BlockHash, stored));
        // The first prompt's 4 blocks were stored with the hasher the router would use.
        var expected = engine.Hasher.HashPrefix(Prompt(64, 1).ToArray());
        Assert.All(expected.Take(3), h => Assert.Contains(h, stored));
    }

    internal static async Task WaitFor(Func<bool> condition, int timeoutMs = 5000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail("condition not reached in time");
            await Task.Delay(10);
        }
    }
}

public sealed class EngineFaultTests
{
    [Fact]
    public async Task A_fault_in_the_forward_pass_fails_every_in_flight_request_and_frees_memory()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        int steps = 0;
        engine.BeforeStep = () =>
        {
            if (Interlocked.Increment(ref steps) == 5) throw new InvalidOperationException("injected fault");
        };
        var prompts = Enumerable.Range(0, 3).Select(i => (IReadOnlyList<int>)Enumerable.Range(10 * i, 20).ToList()).ToList();
        var outcomes = await Task.WhenAll(prompts.Select(async p =>
        {
            GenerationChunk? last = null;
            await foreach (var c in engine.GenerateAsync(new GenerationRequest(p, new SamplingParams { MaxTokens = 50, IgnoreEos = true })))
                last = c;
            return last!;
        }));
        Assert.All(outcomes, o =>
        {
            Assert.Equal(FinishReason.Error, o.Finish);
            Assert.Contains("injected fault", o.Error);
        });
        Assert.False(engine.Healthy);
        Assert.Equal(0, await EngineStatsWait.Settle(engine, s => s.KvBlocksUsed));
        var refused = Assert.Throws<EngineUnavailableException>(() => engine.GenerateAsync(new GenerationRequest([1, 2], new SamplingParams())));
        Assert.Contains("injected fault", refused.Message);
    }
}

public sealed class EngineTracingTests
{
    [Fact]
    public async Task Engine_spans_join_the_callers_trace_and_steps_link_to_requests()
    {
        var spans = new System.Collections.Concurrent.ConcurrentBag<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name is EngineTelemetry.SourceName or "test",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => spans.Add(a),
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        using var source = new System.Diagnostics.ActivitySource("test");
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        System.Diagnostics.ActivityTraceId traceId;
        using (var parent = source.StartActivity("router.request"))
        {
            traceId = parent!.TraceId;
            await foreach (var _ in engine.GenerateAsync(new GenerationRequest([1, 2, 3, 4], new SamplingParams { MaxTokens = 3, IgnoreEos = true }))) { }
        }
        await EngineTests.WaitFor(() => spans.Any(s => s.OperationName == "engine.decode"));
        foreach (var name in new[] { "engine.queue", "engine.prefill", "engine.decode" })
            Assert.Contains(spans, s => s.OperationName == name && s.TraceId == traceId);
        Assert.Contains(spans, s => s.OperationName == "engine.step" && s.Links.Any(l => l.Context.TraceId == traceId));
    }
}

internal static class EngineStatsWait
{
    /// <summary>
    /// A counter from the engine's stats once it reads 0 or 5 s have passed: the snapshot is refreshed at the end of
    /// the engine's step, a moment after the last chunk reached the caller.
    /// </summary>
    public static async Task<int> Settle(LlmEngine engine, Func<EngineStats, int> read)
    {
        for (var until = DateTime.UtcNow.AddSeconds(5); read(engine.GetStats()) != 0 && DateTime.UtcNow < until;) await Task.Delay(10);
        return read(engine.GetStats());
    }
}
