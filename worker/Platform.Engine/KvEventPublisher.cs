// Hands the engine's KV events to its subscribers (the worker's SubscribeKvEvents
// streams), on the engine thread after each step. A subscriber that throws is
// logged and kept; one that is slow slows the engine, so handlers only queue.
// The subscriber list is copied on write, so publishing takes no lock.
using Microsoft.Extensions.Logging;
using Platform.Core.KvEvents;

namespace Platform.Engine;

internal sealed partial class KvEventPublisher(ILogger logger)
{
    private readonly Lock _lock = new();
    private Action<IReadOnlyList<KvEvent>>[] _subscribers = [];

    /// <summary>Adds a handler; the returned action removes it.</summary>
    public Action Add(Action<IReadOnlyList<KvEvent>> handler)
    {
        lock (_lock) _subscribers = [.. _subscribers, handler];
        return () =>
        {
            lock (_lock) _subscribers = _subscribers.Where(s => s != handler).ToArray();
        };
    }

    public void Publish(IReadOnlyList<KvEvent> events)
    {
        foreach (var s in Volatile.Read(ref _subscribers))
        {
            try
            {
                s(events);
            }
            catch (Exception e)
            {
                LogSubscriberFailed(logger, e);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A KV event subscriber threw")]
    private static partial void LogSubscriberFailed(ILogger logger, Exception e);
}
