// Generate, GetLoad and GetInfo over real gRPC (HTTP/2 on 127.0.0.1:0): tokens
// equal a separate engine's, cancellation frees blocks, bad requests are
// InvalidArgument with the engine's message.
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Engine;
using Platform.Engine.Scheduling;
using FinishReason = Platform.Core.Protos.FinishReason;

namespace Platform.Worker.Tests;

public sealed class GenerateTests
{
    [Fact]
    public async Task Streamed_tokens_match_a_separate_engine_and_a_repeat_reports_cached_tokens()
    {
        var prompt = TestModel.Prompt(40, 1);
        List<int> expected = [];
        using (var reference = LlmEngine.Load(TestModel.Dir, new EngineOptions { NumKvBlocks = 64, Threads = 1, DefaultSeed = 1 }))
        {
            await foreach (var chunk in reference.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 12, Temperature = 0, IgnoreEos = true })))
                expected.AddRange(chunk.TokenIds);
        }
        Assert.Equal(12, expected.Count);

        await using var w = await WorkerUnderTest.StartAsync();
        var chunks = await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 12));
        Assert.Equal(expected, chunks.SelectMany(c => c.TokenIds));
        Assert.All(chunks[..^1], c => Assert.Equal(FinishReason.Unspecified, c.FinishReason));
        var last = chunks[^1];
        Assert.Equal(FinishReason.Length, last.FinishReason);
        Assert.Equal(40, last.PromptTokens);
        Assert.Equal(12, last.CompletionTokens);
        Assert.Equal(0, last.Cached.Device);
        Assert.All(chunks, c => Assert.Equal(40, c.PromptTokens));

        var again = await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 12));
        Assert.Equal(expected, again.SelectMany(c => c.TokenIds));
        Assert.Equal(32, again[^1].Cached.Device);  // two full 16-token blocks of the 40-token prompt
    }

    [Fact]
    public async Task Logprobs_cross_the_wire_aligned_with_the_tokens_and_equal_to_the_engines()
    {
        var prompt = TestModel.Prompt(20, 5);
        var expected = new List<Platform.Engine.Sampling.TokenLogprobs>();
        using (var reference = LlmEngine.Load(TestModel.Dir, new EngineOptions { NumKvBlocks = 64, Threads = 1, DefaultSeed = 1 }))
        {
            await foreach (var chunk in reference.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 5, Temperature = 0, IgnoreEos = true, Logprobs = 2 })))
                expected.AddRange(chunk.Logprobs ?? []);
        }

        await using var w = await WorkerUnderTest.StartAsync();
        var request = WorkerUnderTest.Request(prompt, 5);
        request.Sampling.Logprobs = 2;
        var chunks = await w.GenerateAllAsync(request);
        Assert.All(chunks, c => Assert.Equal(c.TokenIds.Count, c.Logprobs.Count));
        var got = chunks.SelectMany(c => c.Logprobs).ToList();
        Assert.Equal(expected.Count, got.Count);
        for (int i = 0; i < got.Count; i++)
        {
            Assert.Equal(expected[i].Logprob, got[i].Logprob, 4);
            Assert.Equal(expected[i].TopTokenIds, got[i].TopTokenIds);
        }
        // Unset: none computed or sent.
        var plain = await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 3));
        Assert.All(plain, c => Assert.Empty(c.Logprobs));
    }

    [Fact]
    public async Task With_the_host_tier_evicted_blocks_come_back_from_host_memory_and_load_and_snapshots_show_it()
    {
        await using var w = await WorkerUnderTest.StartAsync("--kv-tier", "host", "--kv-host-memory", "8MB", "--kv-blocks", "12");
        var p = TestModel.Prompt(100, 3);
        var first = await w.GenerateAllAsync(WorkerUnderTest.Request(p, 12));
        await w.Worker.Engine.KvTiers!.FlushAsync();
        await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(150, 4), 12)); // 10 of the 12 device blocks: p's leave
        var again = await w.GenerateAllAsync(WorkerUnderTest.Request(p, 12));
        Assert.Equal(first.SelectMany(c => c.TokenIds), again.SelectMany(c => c.TokenIds));
        var cached = again[^1].Cached;
        Assert.Equal(96, cached.Device + cached.Host + cached.Remote);
        Assert.True(cached.Host >= 48, $"expected blocks from host memory, got {cached}");
        Assert.Equal(0, cached.Remote);

        var load = await w.Client.GetLoadAsync(new LoadRequest());
        Assert.True(load.KvHostBlocks >= 6, $"host blocks {load.KvHostBlocks}");
        Assert.True(load.KvHostCapacityBlocks >= load.KvHostBlocks);
        Assert.False(load.KvRemoteAvailable);

        using var call = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        var snapshot = call.ResponseStream.Current;
        Assert.True(snapshot.IsSnapshot);
        Assert.True(snapshot.Snapshot.Count(b => b.Tier == KvTier.Host) >= 6);
        Assert.Contains(snapshot.Snapshot, b => b.Tier == KvTier.Device);
    }

    [Fact]
    public async Task A_chunked_prefill_sends_progress_on_the_wire_before_the_first_token()
    {
        // 300 prompt tokens at 32 a step: ten steps of prefill, the first of them reported at once.
        await using var w = await WorkerUnderTest.StartAsync("--max-batch-tokens", "32");
        var chunks = await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(300, 6), 4));
        int first = chunks.FindIndex(c => c.TokenIds.Count > 0);
        Assert.True(first >= 1, "a progress chunk before the first token");
        Assert.All(chunks[..first], c =>
        {
            Assert.Empty(c.TokenIds);
            Assert.Equal("", c.Text);
            Assert.Equal(FinishReason.Unspecified, c.FinishReason);
            Assert.NotNull(c.Progress);
            Assert.False(c.Progress.Queued);
            Assert.Equal(300, c.Progress.PromptTokens);
            Assert.InRange(c.Progress.ComputedTokens, 1, 299);
        });
        Assert.All(chunks[first..], c => Assert.Null(c.Progress));
        Assert.Equal(4, chunks.Sum(c => c.TokenIds.Count));
        Assert.Equal((FinishReason.Length, 4), (chunks[^1].FinishReason, chunks[^1].CompletionTokens));
    }

    [Fact]
    public async Task GetInfo_and_GetLoad_describe_the_worker()
    {
        await using var w = await WorkerUnderTest.StartAsync("--served-model-name", "tiny-test", "--worker-id", "w-7");
        var info = await w.Client.GetInfoAsync(new InfoRequest());
        var engine = w.Worker.Engine;
        Assert.Equal("w-7", info.WorkerId);
        Assert.Equal("tiny-test", info.ServedModelName);
        Assert.Equal(engine.Fingerprint.Canonical, info.ModelFingerprint);
        Assert.Equal(16, info.BlockSize);
        Assert.Equal(engine.Hasher.Seed, info.BlockHashSeed);
        Assert.Equal(engine.Fingerprint.HashSeed, info.BlockHashSeed);
        Assert.Equal(4096, info.MaxContextTokens);
        Assert.Equal(512, info.VocabSize);

        var load = await w.Client.GetLoadAsync(new LoadRequest());
        Assert.True(load.Healthy);
        Assert.False(load.Draining);
        Assert.Equal(64, load.KvBlocksTotal);
        Assert.Equal(0, load.KvBlocksUsed);
        Assert.Equal(64, load.KvBlocksFree);
        Assert.Equal(0, load.Running);
        Assert.Equal(0, load.Waiting);
    }

    [Fact]
    public async Task Cancelling_the_call_aborts_the_engine_request_and_frees_its_blocks()
    {
        await using var w = await WorkerUnderTest.StartAsync();
        var baseline = await w.Client.GetLoadAsync(new LoadRequest());
        using var cts = new CancellationTokenSource();
        using var call = w.Client.Generate(WorkerUnderTest.Request(TestModel.Prompt(50, 3), 3000), cancellationToken: cts.Token);
        for (int i = 0; i < 3; i++) Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        var during = await w.Client.GetLoadAsync(new LoadRequest());
        Assert.Equal(1, during.Running);
        Assert.True(during.KvBlocksUsed > baseline.KvBlocksUsed, $"a running request holds blocks (used {during.KvBlocksUsed})");

        await cts.CancelAsync();
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { while (await call.ResponseStream.MoveNext(CancellationToken.None)) { } });
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
        await AssertAbortedAsync(w, baseline, "the cancel");
    }

    /// <summary>
    /// The request of 3,000 tokens let go of its blocks because it was aborted, not because it ran out: the blocks are
    /// back within a bound generous enough for a loaded machine (other test classes share the two cores), and the
    /// engine took fewer steps than the request would have needed (one request decodes at most one token a step).
    /// </summary>
    private static async Task AssertAbortedAsync(WorkerUnderTest w, LoadReport baseline, string after)
    {
        await Poll.UntilAsync(async () => (await w.Client.GetLoadAsync(new LoadRequest())) is { Running: 0, Waiting: 0 } l && l.KvBlocksUsed == baseline.KvBlocksUsed,
            TimeSpan.FromSeconds(20), $"KV blocks back to baseline after {after}");
        Assert.InRange(w.Worker.Engine.GetStats().Steps, 1, 2999);
    }

    [Fact]
    public async Task A_client_connection_that_drops_mid_stream_frees_the_requests_blocks()
    {
        await using var w = await WorkerUnderTest.StartAsync();
        var baseline = await w.Client.GetLoadAsync(new LoadRequest());
        var channel = Grpc.Net.Client.GrpcChannel.ForAddress(w.Worker.GrpcAddress);
        var client = new Inference.InferenceClient(channel);
        var call = client.Generate(WorkerUnderTest.Request(TestModel.Prompt(50, 4), 3000));
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(1, (await w.Client.GetLoadAsync(new LoadRequest())).Running);

        channel.Dispose();  // closes the HTTP/2 connection under the running call
        await AssertAbortedAsync(w, baseline, "the connection dropped");
        using var http = new HttpClient { BaseAddress = w.Worker.HttpAddress };
        string metrics = await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
        Assert.Contains("finished_reason=\"abort\"} 1", metrics, StringComparison.Ordinal);
        Assert.DoesNotContain("finished_reason=\"length\"", metrics, StringComparison.Ordinal);
        call.Dispose();
    }

    [Fact]
    public async Task An_engine_error_mid_stream_ends_it_with_an_error_chunk()
    {
        // 4 blocks hold 64 tokens: the prompt fits, but the sequence outgrows the whole pool while decoding.
        await using var w = await WorkerUnderTest.StartAsync("--kv-blocks", "4");
        var chunks = await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(40, 6), 100));
        var last = chunks[^1];
        Assert.Equal(FinishReason.Error, last.FinishReason);
        Assert.Contains("KV cache", last.Error);
        int tokens = chunks.Sum(c => c.TokenIds.Count);
        Assert.InRange(tokens, 1, 99);
        Assert.Equal(tokens, last.CompletionTokens);
        Assert.Equal(0, (await w.Client.GetLoadAsync(new LoadRequest())).KvBlocksUsed);
    }

    [Fact]
    public async Task Bad_requests_are_InvalidArgument_with_the_engines_message_and_the_worker_keeps_serving()
    {
        await using var w = await WorkerUnderTest.StartAsync();
        async Task<RpcException> Rejected(GenerateRequest request) =>
            await Assert.ThrowsAsync<RpcException>(() => w.GenerateAllAsync(request));

        var outside = await Rejected(WorkerUnderTest.Request([1, 2, 99999], 4));
        Assert.Equal(StatusCode.InvalidArgument, outside.StatusCode);
        Assert.Contains("outside the vocabulary", outside.Status.Detail);

        var empty = await Rejected(WorkerUnderTest.Request([], 4));
        Assert.Equal(StatusCode.InvalidArgument, empty.StatusCode);
        Assert.Contains("prompt is empty", empty.Status.Detail);

        var nan = WorkerUnderTest.Request([1, 2, 3], 4);
        nan.Sampling.Temperature = double.NaN;
        Assert.Equal(StatusCode.InvalidArgument, (await Rejected(nan)).StatusCode);

        var tooLong = await Rejected(WorkerUnderTest.Request(TestModel.Prompt(100, 1), 4000));
        Assert.Equal(StatusCode.InvalidArgument, tooLong.StatusCode);
        Assert.Contains("max_tokens", tooLong.Status.Detail);

        var ok = await w.GenerateAllAsync(WorkerUnderTest.Request([1, 2, 3], 2));
        Assert.Equal(FinishReason.Length, ok[^1].FinishReason);
        Assert.Equal(0, (await w.Client.GetLoadAsync(new LoadRequest())).KvBlocksUsed);
    }
}

public sealed class LargeMessageTests
{
    [Fact]
    public async Task A_prompt_message_larger_than_grpcs_default_4_MB_reaches_the_engine()
    {
        await using var w = await WorkerUnderTest.StartAsync();
        // 2.5M ids of 2 varint bytes each: a 5 MB message (gRPC's default limit is 4 MB). The engine then
        // refuses it for the tiny model's 4096-token context, which proves the worker received it whole.
        var prompt = Enumerable.Repeat(300, 2_500_000).ToArray();
        var error = await Assert.ThrowsAsync<RpcException>(() => w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 1)));
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains("2500000 tokens", error.Status.Detail);
    }
}

public sealed class ConcurrentGenerateTests
{
    [Fact]
    public async Task Concurrent_streams_on_one_connection_each_get_their_own_tokens()
    {
        await using var w = await WorkerUnderTest.StartAsync("--kv-blocks", "128");
        var prompts = Enumerable.Range(0, 6).Select(i => TestModel.Prompt(20 + 7 * i, 50 + i)).ToList();
        var sequential = new List<List<int>>();
        foreach (var p in prompts) sequential.Add([.. (await w.GenerateAllAsync(WorkerUnderTest.Request(p, 10))).SelectMany(c => c.TokenIds)]);

        var concurrent = await Task.WhenAll(prompts.Select(async p => (await w.GenerateAllAsync(WorkerUnderTest.Request(p, 10))).SelectMany(c => c.TokenIds).ToList()));
        for (int i = 0; i < prompts.Count; i++) Assert.Equal(sequential[i], concurrent[i]);
        Assert.True(sequential.Distinct(new SequenceComparer()).Count() > 1, "different prompts should not all give the same tokens");
        var load = await w.Client.GetLoadAsync(new LoadRequest());
        Assert.Equal(0, load.Running);
        Assert.Equal(0, load.KvBlocksUsed);
    }

    private sealed class SequenceComparer : IEqualityComparer<List<int>>
    {
        public bool Equals(List<int>? x, List<int>? y) => x!.SequenceEqual(y!);
        public int GetHashCode(List<int> obj) => obj.Aggregate(17, (h, v) => h * 31 + v);
    }
}
