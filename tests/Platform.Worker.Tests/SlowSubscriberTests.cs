// A KV event subscriber that stops reading must never stall the engine: its
// bounded buffer overflows, it is cut off with ResourceExhausted, and a new
// subscription starts from a snapshot that holds every block. The service is
// driven directly with a response writer that blocks, since over a real socket
// HTTP/2 buffering would hide the slow reader for a long time.
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Platform.Core.Protos;

namespace Platform.Worker.Tests;

public sealed class SlowSubscriberTests
{
    [Fact]
    public async Task A_subscriber_that_stops_reading_is_disconnected_without_blocking_the_engine()
    {
        await using var w = await WorkerUnderTest.StartAsync("--kv-subscriber-buffer", "2");
        var service = ActivatorUtilities.CreateInstance<InferenceService>(w.Worker.Services);
        var writer = new GatedWriter();
        using var callCts = new CancellationTokenSource();
        var subscription = service.SubscribeKvEvents(new SubscribeKvEventsRequest(), writer, new TestCallContext(callCts.Token));
        await Task.WhenAny(writer.FirstWrite, subscription).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(subscription.IsCompleted, $"the subscription ended early: {subscription.Exception}");

        // Six prompts with distinct first blocks: at least six event batches while the writer is stuck.
        var prompts = Enumerable.Range(0, 6).Select(i => TestModel.Prompt(40, 100 + i)).ToList();
        foreach (var p in prompts)
        {
            var chunks = await w.GenerateAllAsync(WorkerUnderTest.Request(p, 1)).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(FinishReason.Length, chunks[^1].FinishReason);
        }

        writer.Open();
        var ex = await Assert.ThrowsAsync<RpcException>(() => subscription.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Contains("fresh snapshot", ex.Status.Detail);

        // Resync: the new snapshot holds the first full block of every prompt.
        using var fresh = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        Assert.True(await fresh.ResponseStream.MoveNext(CancellationToken.None));
        var snapshot = fresh.ResponseStream.Current;
        Assert.True(snapshot.IsSnapshot);
        var held = snapshot.Snapshot.Select(b => b.BlockHash).ToHashSet();
        var hasher = w.Worker.Engine.Hasher;
        Assert.All(prompts, p => Assert.Contains(hasher.HashPrefix(p)[0], held));
    }

    /// <summary>Accepts the first message (the snapshot), then blocks every write until opened.</summary>
    private sealed class GatedWriter : IServerStreamWriter<KvEventBatch>
    {
        private readonly TaskCompletionSource _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _writes;

        public Task FirstWrite => _first.Task;
        public WriteOptions? WriteOptions { get; set; }

        public void Open() => _gate.TrySetResult();

        public Task WriteAsync(KvEventBatch message) => WriteAsync(message, CancellationToken.None);

        public Task WriteAsync(KvEventBatch message, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _writes) == 1)
            {
                Assert.True(message.IsSnapshot);
                _first.TrySetResult();
                return Task.CompletedTask;
            }
            return _gate.Task.WaitAsync(cancellationToken);
        }
    }

    private sealed class TestCallContext(CancellationToken cancellationToken) : ServerCallContext
    {
        protected override string MethodCore => "/platform.inference.v1.Inference/SubscribeKvEvents";
        protected override string HostCore => "127.0.0.1";
        protected override string PeerCore => "test-subscriber";
        protected override DateTime DeadlineCore => DateTime.MaxValue;
        protected override Metadata RequestHeadersCore { get; } = [];
        protected override CancellationToken CancellationTokenCore => cancellationToken;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore { get; } = new(null, []);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) =>
            throw new NotSupportedException("not used by the worker");

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
