// SubscribeKvEvents over gRPC: a snapshot first, then live batches whose
// sequence numbers continue from the snapshot without gaps; a late subscriber's
// snapshot holds the blocks stored before it came.
using Grpc.Core;
using Platform.Core.Protos;

namespace Platform.Worker.Tests;

public sealed class KvEventTests
{
    private static async Task<KvEventBatch> NextAsync(AsyncServerStreamingCall<KvEventBatch> call)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.True(await call.ResponseStream.MoveNext(timeout.Token), "the event stream ended");
        return call.ResponseStream.Current;
    }

    [Fact]
    public async Task Subscriber_gets_a_snapshot_then_gap_free_live_events_and_a_late_subscriber_sees_earlier_blocks()
    {
        await using var w = await WorkerUnderTest.StartAsync("--worker-id", "kv-1");
        using var first = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        var snapshot = await NextAsync(first);
        Assert.True(snapshot.IsSnapshot);
        Assert.Empty(snapshot.Snapshot);
        Assert.Empty(snapshot.Events);
        Assert.Equal("kv-1", snapshot.WorkerId);

        var prompt = TestModel.Prompt(64, 1);
        await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 1));
        var expected = w.Worker.Engine.Hasher.HashPrefix(prompt).Take(3).ToList();  // full prompt blocks the router would hash

        var events = new List<KvEvent>();
        while (!expected.All(h => events.Any(e => e.Kind == KvEventKind.Stored && e.BlockHash == h)))
        {
            var batch = await NextAsync(first);
            Assert.False(batch.IsSnapshot);
            Assert.Equal("kv-1", batch.WorkerId);
            events.AddRange(batch.Events);
        }
        for (int i = 0; i < events.Count; i++) Assert.Equal(snapshot.SnapshotSequence + 1 + i, events[i].Sequence);
        // Stored blocks chain: each names its parent (the first block's parent is the root, 0).
        var stored = events.Where(e => e.Kind == KvEventKind.Stored).ToList();
        Assert.Equal(0ul, stored[0].ParentHash);
        Assert.Equal(expected[0], stored[1].ParentHash);
        Assert.All(stored, e => Assert.Equal(KvTier.Device, e.Tier));

        using var late = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        var lateSnapshot = await NextAsync(late);
        Assert.True(lateSnapshot.IsSnapshot);
        // The first subscriber has seen (or is about to see) exactly the events up to the late snapshot.
        while (events[^1].Sequence < lateSnapshot.SnapshotSequence) events.AddRange((await NextAsync(first)).Events);
        Assert.Equal(events[^1].Sequence, lateSnapshot.SnapshotSequence);
        for (int i = 0; i < events.Count; i++) Assert.Equal(snapshot.SnapshotSequence + 1 + i, events[i].Sequence);
        var held = lateSnapshot.Snapshot.ToDictionary(b => b.BlockHash, b => b.ParentHash);
        Assert.All(expected, h => Assert.True(held.ContainsKey(h), $"block {h:x16} missing from the late snapshot"));
        Assert.Equal(expected[0], held[expected[1]]);

        // Both subscribers then see the same next events, numbered after the late snapshot.
        await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(40, 2), 1));
        var a = await NextAsync(first);
        var b = await NextAsync(late);
        Assert.Equal(lateSnapshot.SnapshotSequence + 1, a.Events[0].Sequence);
        Assert.Equal(a.Events[0], b.Events[0]);
    }

    [Fact]
    public async Task Evictions_are_reported_as_removed_blocks()
    {
        // 10 blocks: a 150-token prompt needs every one of them, evicting the first prompt's cached blocks.
        await using var w = await WorkerUnderTest.StartAsync("--kv-blocks", "10");
        using var call = w.Client.SubscribeKvEvents(new SubscribeKvEventsRequest());
        var snapshot = await NextAsync(call);
        await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(64, 1), 1));
        await w.GenerateAllAsync(WorkerUnderTest.Request(TestModel.Prompt(150, 2), 1));
        var events = new List<KvEvent>();
        while (!events.Any(e => e.Kind == KvEventKind.Removed)) events.AddRange((await NextAsync(call)).Events);
        for (int i = 0; i < events.Count; i++) Assert.Equal(snapshot.SnapshotSequence + 1 + i, events[i].Sequence);
        var stored = events.Where(e => e.Kind == KvEventKind.Stored).Select(e => e.BlockHash).ToHashSet();
        Assert.All(events.Where(e => e.Kind == KvEventKind.Removed), e => Assert.Contains(e.BlockHash, stored));
    }
}
