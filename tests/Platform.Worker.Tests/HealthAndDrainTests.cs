// Health and graceful drain: SERVING once loaded; on stop (what SIGTERM does)
// readiness drops, gRPC health says NOT_SERVING, new Generate calls are
// Unavailable, and a stream already running finishes with all its tokens.
using System.Net;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Grpc.Health.V1;
using Platform.Core.Protos;

namespace Platform.Worker.Tests;

public sealed class HealthAndDrainTests
{
    [Fact]
    public async Task Health_is_serving_then_not_serving_while_draining_and_in_flight_streams_finish()
    {
        // A grace far longer than the test: on a loaded machine the 200-token stream must not outlive it (the
        // drain here ends when nothing is in flight, not by the grace; the grace's end has its own test below).
        await using var w = await WorkerUnderTest.StartAsync("--drain-grace-seconds", "300");
        var health = new Health.HealthClient(w.Channel);
        using var http = new HttpClient { BaseAddress = w.Worker.HttpAddress };
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving,
            (await health.CheckAsync(new HealthCheckRequest { Service = Inference.Descriptor.FullName })).Status);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/readyz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);

        // A KV event subscriber stays connected through the drain and is ended when it completes. It subscribes before
        // the stream starts: the tiny model can store all the stream's blocks in milliseconds, and a subscription after
        // that would find them in its snapshot and wait for events that never come (until the grace ends).
        using var kvEvents = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        Assert.True(await kvEvents.ResponseStream.MoveNext(CancellationToken.None));
        Assert.True(kvEvents.ResponseStream.Current.IsSnapshot);

        // A stream in flight when the drain starts, plus a held admission so the drain cannot end
        // before the assertions below (the tiny model may finish the stream in milliseconds).
        var drain = w.Worker.Services.GetRequiredService<DrainCoordinator>();
        var held = drain.TryBeginRequest();
        Assert.NotNull(held);
        using var inFlight = w.Client.Generate(WorkerUnderTest.Request(TestModel.Prompt(30, 4), 200));
        Assert.True(await inFlight.ResponseStream.MoveNext(CancellationToken.None));
        var tokens = inFlight.ResponseStream.Current.TokenIds.ToList();

        using var watch = health.Watch(new HealthCheckRequest());
        Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, watch.ResponseStream.Current.Status);

        var stopping = w.Worker.StopAsync();
        Assert.False(stopping.IsCompleted);
        // Watchers hear of the drain at once (a repeated SERVING from the load may come first).
        using (var watchTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            do Assert.True(await watch.ResponseStream.MoveNext(watchTimeout.Token));
            while (watch.ResponseStream.Current.Status == HealthCheckResponse.Types.ServingStatus.Serving);
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, watch.ResponseStream.Current.Status);
        }
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync("/readyz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);
        Assert.True((await w.Client.GetLoadAsync(new LoadRequest())).Draining);
        var refused = await Assert.ThrowsAsync<RpcException>(() => w.GenerateAllAsync(WorkerUnderTest.Request([1, 2, 3], 2)));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.Contains("draining", refused.Status.Detail);

        GenerateChunk last = inFlight.ResponseStream.Current;
        while (await inFlight.ResponseStream.MoveNext(CancellationToken.None))
        {
            last = inFlight.ResponseStream.Current;
            tokens.AddRange(last.TokenIds);
        }
        Assert.Equal(FinishReason.Length, last.FinishReason);
        Assert.Equal(200, tokens.Count);

        // The in-flight stream stored blocks after the snapshot: the subscriber receives those events, and stays connected through the drain.
        using (var eventTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            Assert.True(await kvEvents.ResponseStream.MoveNext(eventTimeout.Token));
        Assert.NotEmpty(kvEvents.ResponseStream.Current.Events);

        held.Dispose();
        // Well under the 30 s grace period: nothing in flight, and the KV stream does not hold the server up.
        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
        using var endTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        while (await kvEvents.ResponseStream.MoveNext(endTimeout.Token)) { }
        Assert.Equal(StatusCode.OK, kvEvents.GetStatus().StatusCode);
    }

    [Fact]
    public async Task Streams_still_running_when_the_grace_period_ends_are_aborted_with_a_final_chunk()
    {
        // Grace 0: the drain ends at once and aborts what runs. 256 blocks hold the whole 4030-token sequence.
        await using var w = await WorkerUnderTest.StartAsync("--drain-grace-seconds", "0", "--kv-blocks", "256");
        using var inFlight = w.Client.Generate(WorkerUnderTest.Request(TestModel.Prompt(30, 5), 4000));
        Assert.True(await inFlight.ResponseStream.MoveNext(CancellationToken.None));
        var stopping = w.Worker.StopAsync();
        GenerateChunk last = inFlight.ResponseStream.Current;
        int tokens = last.TokenIds.Count;
        while (await inFlight.ResponseStream.MoveNext(CancellationToken.None))
        {
            last = inFlight.ResponseStream.Current;
            tokens += last.TokenIds.Count;
        }
        Assert.Equal(FinishReason.Abort, last.FinishReason);
        Assert.Contains("retry on another worker", last.Error);
        Assert.True(tokens < 4000, $"the stream was cut short ({tokens} tokens)");
        Assert.Equal(tokens, last.CompletionTokens);
        await stopping.WaitAsync(TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task The_grace_period_is_measured_on_the_injected_clock()
    {
        var time = new FakeTimeProvider();
        await using var worker = await InProcessWorker.StartAsync(TestModel.Dir, [.. WorkerUnderTest.SmallEngine, "--drain-grace-seconds", "30"],
            builder => builder.Services.AddSingleton<TimeProvider>(time));
        var drain = worker.Services.GetRequiredService<DrainCoordinator>();
        var inFlight = drain.TryBeginRequest();
        Assert.NotNull(inFlight);

        var stopping = worker.StopAsync();
        await Poll.UntilAsync(() => Task.FromResult(drain.IsDraining), TimeSpan.FromSeconds(5), "draining");
        time.Advance(TimeSpan.FromSeconds(29));
        await Task.Delay(50);
        Assert.False(drain.HardStop.IsCancellationRequested, "aborted before the grace period ended");
        Assert.False(stopping.IsCompleted);

        time.Advance(TimeSpan.FromSeconds(2));
        await Poll.UntilAsync(() => Task.FromResult(drain.HardStop.IsCancellationRequested), TimeSpan.FromSeconds(5), "in-flight work aborted after 30 s");
        inFlight.Dispose();
        await stopping.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
