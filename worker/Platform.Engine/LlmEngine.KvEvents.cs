// The engine's KV events. The block pool and the KV tier record every change in
// the engine's one KvEventLog (gap-free sequence numbers); after each step, or
// when the tier's writer asks for it, the engine thread drains the log and hands
// the batch to every subscriber (KvEventPublisher). A new subscriber gets a
// snapshot of every cached block with the sequence number it includes.
using Platform.Core.KvEvents;

namespace Platform.Engine;

public sealed partial class LlmEngine
{
    /// <summary>
    /// Receives KV events on the engine thread after each step (keep the handler quick).
    /// The returned snapshot holds every block cached at subscription time, with the
    /// sequence number of the last event it includes.
    /// </summary>
    public Task<KvSubscription> SubscribeKvEventsAsync(Action<IReadOnlyList<KvEvent>> handler)
    {
        var tcs = new TaskCompletionSource<KvSubscription>(TaskCreationOptions.RunContinuationsAsynchronously);
        Enqueue(() =>
        {
            // Pending tier events first, to the existing subscribers; the new one gets them in the snapshot.
            PublishEvents();
            var unsubscribe = _publisher.Add(handler);
            var blocks = _kv.Pool.SnapshotCached();
            var tiers = _tiers?.SnapshotTiers() ?? [];
            tcs.SetResult(new KvSubscription(_events.LastSequence, blocks, tiers, unsubscribe));
        });
        return tcs.Task;
    }

    private void PublishEvents()
    {
        _tiers?.DrainEvents(_events);
        _eventBuffer.Clear();
        _events.Drain(_eventBuffer);
        if (_eventBuffer.Count > 0) _publisher.Publish(_eventBuffer.ToArray());
    }

    private void RequestPublish()
    {
        if (Interlocked.Exchange(ref _publishRequested, 1) == 0)
            Enqueue(() =>
            {
                Volatile.Write(ref _publishRequested, 0);
                PublishEvents();
            });
    }
}
