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
    public async Task Cancelling_the_call_aborts_the_engine_request_and_frees_its_blocks_within_a_second()
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
        await Poll.UntilAsync(async () => (await w.Client.GetLoadAsync(new LoadRequest())) is { Running: 0, Waiting: 0 } l && l.KvBlocksUsed == baseline.KvBlocksUsed,
            TimeSpan.FromSeconds(1), "KV blocks back to baseline after the cancel");
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
