// The engine's one KV event log: every change to what this worker holds, in
// any tier, numbered in one gap-free sequence, so the router's prefix index
// learns all tiers from one stream and can tell a missed event by a gap
// (vLLM's kv_events). The block pool records device changes as they happen;
// the KV tier's changes (host stored/evicted, remote stored) are recorded when
// the engine thread drains them. Engine thread only: no locks.
using Platform.Core.KvEvents;

namespace Platform.Engine.KvCache;

public sealed class KvEventLog
{
    private readonly List<KvEvent> _events = new(1024);

    /// <summary>The sequence number of the last event recorded (0 before the first).</summary>
    public long LastSequence { get; private set; }

    public void Record(KvEventKind kind, ulong hash, ulong parent, KvTier tier) =>
        _events.Add(new KvEvent(++LastSequence, kind, hash, parent, tier));

    /// <summary>Moves the events recorded since the last call into <paramref name="into"/>.</summary>
    public void Drain(List<KvEvent> into)
    {
        into.AddRange(_events);
        _events.Clear();
    }
}
