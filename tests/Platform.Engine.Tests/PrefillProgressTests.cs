// A prompt that takes many steps to prefill is never silent: the engine writes
// progress chunks (no tokens, no finish) with growing computed counts while it
// prefills and "queued" ones while it waits, and the first token's chunk
// carries the queue and prefill times. Cancelling such a prompt mid-prefill
// gives its KV blocks back within a second (the small preset at 4K+ context,
// where one unbounded 512-token step takes longer than that on this machine).
using Platform.Core.Models;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class PrefillProgressTests
{
    private static List<int> Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(0, 500)).ToList();
    }

    [Fact]
    public async Task A_chunked_prefill_streams_progress_with_growing_counts_before_its_first_token()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, MaxBatchTokens = 32, DefaultSeed = 1, Threads = 2 });
        engine.ProgressInterval = TimeSpan.Zero;
        var chunks = new List<GenerationChunk>();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt(300, 1), new SamplingParams { MaxTokens = 3, Temperature = 0, IgnoreEos = true })))
            chunks.Add(chunk);

        int first = chunks.FindIndex(c => c.TokenIds.Count > 0);
        var progress = chunks[..first];
        Assert.True(progress.Count >= 300 / 32 - 1, $"{progress.Count} progress chunks for a 10-step prefill");
        Assert.All(progress, c =>
        {
            Assert.Empty(c.TokenIds);
            Assert.Equal("", c.Text);
            Assert.Null(c.Finish);
            Assert.Equal(300, c.PromptTokens);
            Assert.NotNull(c.Progress);
            Assert.False(c.Progress!.Value.Queued);
            Assert.Equal(300, c.Progress.Value.Total);
            Assert.InRange(c.Progress.Value.Computed, 1, 299);
        });
        var computed = progress.Select(c => c.Progress!.Value.Computed).ToList();
        Assert.True(computed.Zip(computed.Skip(1)).All(p => p.Second > p.First), string.Join(",", computed));
        Assert.All(chunks[first..], c => Assert.Null(c.Progress));
        Assert.Equal(3, chunks.Sum(c => c.TokenIds.Count));
        var times = chunks[first].Times!.Value;
        Assert.True(times.Queue >= TimeSpan.Zero && times.Prefill > TimeSpan.Zero);
        Assert.All(chunks[(first + 1)..], c => Assert.Null(c.Times));
    }

    [Fact]
    public async Task A_queued_request_gets_queued_progress_until_it_is_admitted()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, MaxRunningRequests = 1, DefaultSeed = 1, Threads = 2 });
        engine.QueuedProgressInterval = TimeSpan.FromMilliseconds(50);
        // After the first request's prefill step, no step runs until the second request is in: a test thread
        // descheduled for the first request's 40 steps (a loaded 2-core machine) would otherwise submit the second
        // after the first had finished, and it would never queue.
        int steps = 0;
        using var secondSubmitted = new ManualResetEventSlim();
        engine.BeforeStep = () =>
        {
            if (Interlocked.Increment(ref steps) > 1) secondSubmitted.Wait(TimeSpan.FromSeconds(30));
            Thread.Sleep(10);
        };
        var sampling = new SamplingParams { MaxTokens = 40, Temperature = 0, IgnoreEos = true };
        var running = new TaskCompletionSource();
        var first = Task.Run(async () =>
        {
            await foreach (var c in engine.GenerateAsync(new GenerationRequest(Prompt(20, 2), sampling)))
                if (c.TokenIds.Count > 0) running.TrySetResult();
        });
        await running.Task;
        var second = engine.GenerateAsync(new GenerationRequest(Prompt(20, 3), sampling));
        secondSubmitted.Set();
        var chunks = new List<GenerationChunk>();
        await foreach (var c in second) chunks.Add(c);
        await first;

        int firstToken = chunks.FindIndex(c => c.TokenIds.Count > 0);
        var queued = chunks[..firstToken];
        Assert.NotEmpty(queued);  // 40 steps of 10 ms behind the first request, told every 50 ms
        Assert.All(queued, c =>
        {
            Assert.Empty(c.TokenIds);
            Assert.Null(c.Finish);
            Assert.Equal(new PrefillProgress(0, 20, true, 0), c.Progress);
        });
        Assert.True(chunks[firstToken].Times!.Value.Queue >= TimeSpan.FromMilliseconds(50));
    }

    [Fact]
    public async Task Cancelling_a_long_prompt_mid_prefill_frees_its_blocks_within_a_second()
    {
        string dir = TestModels.Get(new RandomModelOptions { Preset = "small", Seed = 5 });
        using var engine = TestModels.Engine(dir, new EngineOptions { NumKvBlocks = 12_288 / 16 + 64, Threads = 2, DefaultSeed = 1 });
        var baseline = engine.GetStats();
        using var cts = new CancellationTokenSource();
        var sampling = new SamplingParams { MaxTokens = 4, Temperature = 0, IgnoreEos = true };
        var rng = new Random(4);
        var prompt = Enumerable.Range(0, 12_288).Select(_ => rng.Next(0, 4000)).ToList();
        long cancelledAt = 0;
        int computedAtCancel = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling), cts.Token))
            {
                Assert.Empty(chunk.TokenIds);
                if (chunk.Progress is { Computed: >= 5_000 } p)
                {
                    computedAtCancel = p.Computed;
                    cancelledAt = System.Diagnostics.Stopwatch.GetTimestamp();
                    await cts.CancelAsync();
                }
            }
        });
        while (engine.GetStats() is not { Running: 0, Waiting: 0 } s || s.KvBlocksUsed != baseline.KvBlocksUsed)
        {
            Assert.True(System.Diagnostics.Stopwatch.GetElapsedTime(cancelledAt) < TimeSpan.FromSeconds(5), "the cancelled prompt still holds the engine after 5 s");
            await Task.Delay(5);
        }
        var freedAfter = System.Diagnostics.Stopwatch.GetElapsedTime(cancelledAt);
        Assert.True(freedAfter < TimeSpan.FromSeconds(1), $"blocks freed {freedAfter.TotalMilliseconds:F0} ms after the cancel at {computedAtCancel} computed tokens");
    }
}
