// The router's global prefix index: chained block hash → the workers holding
// that block and in which tiers, fed by every worker's KV event stream.
//
// Because block hashes are chained (hash i covers tokens 0..i), "worker W holds
// the first k blocks of this prompt" is answered by walking the prompt's hashes
// in order and intersecting holder sets until it empties; no radix tree is
// needed (Dynamo's indexer does the same walk on its tree of hashes).
//
// Consistency: each worker's stream starts with a snapshot (every block held,
// current to a sequence number) and continues with events numbered one by one.
// Events at or below the last applied number are duplicates and ignored; a jump
// is a gap: ApplyEvents returns IndexApplyStatus.Gap and the subscriber must
// resubscribe for a fresh snapshot, which replaces everything the index
// believed about that worker. A worker that leaves the pool is removed whole,
// and a restarted worker's new snapshot wipes its old blocks.
//
// Concurrency: one short lock. Writers are the per-worker event loops; the
// reader is placement, which holds the lock for one walk over a prompt's
// hashes (microseconds for thousands of blocks).
using Platform.Core.KvEvents;

namespace Platform.Router.Policies;

public enum IndexApplyStatus
{
    /// <summary>Every new event was applied.</summary>
    Applied,
    /// <summary>An event skipped sequence numbers; nothing after the gap was applied. Resubscribe.</summary>
    Gap,
    /// <summary>No snapshot was applied for this worker yet (or it was removed). Resubscribe.</summary>
    NoSnapshot,
}

/// <param name="ExpectedSequence">For a gap: the sequence number that should have come next.</param>
/// <param name="ReceivedSequence">For a gap: the sequence number that came instead.</param>
public readonly record struct IndexApplyResult(IndexApplyStatus Status, int Applied, long ExpectedSequence = 0, long ReceivedSequence = 0);

/// <summary>A block a worker holds, as listed in a snapshot.</summary>
public readonly record struct HeldBlock(ulong Hash, ulong Parent, KvTier Tier);

/// <summary>How much of a prompt's prefix one worker holds, counting each block once at its best tier.</summary>
public readonly record struct PrefixOverlap(int Blocks, int DeviceBlocks, int HostBlocks, int RemoteBlocks);

public sealed class PrefixIndex
{
    private readonly Lock _lock = new();
    // hash → (worker, tier bit mask) pairs; a handful of workers per block at most.
    private readonly Dictionary<ulong, List<Holder>> _holders = [];
    private readonly Dictionary<string, WorkerEntry> _workers = new(StringComparer.Ordinal);

    private sealed class Holder(string worker, byte tiers)
    {
        public string Worker { get; } = worker;
        public byte Tiers { get; set; } = tiers;
    }

    private sealed class WorkerEntry
    {
        public long LastSequence { get; set; }
        public Dictionary<ulong, byte> Blocks { get; } = [];
    }

    /// <summary>Distinct block hashes held by any worker.</summary>
    public int BlockCount
    {
        get { lock (_lock) return _holders.Count; }
    }

    /// <summary>Blocks the index believes <paramref name="workerId"/> holds (any tier).</summary>
    public int WorkerBlockCount(string workerId)
    {
        lock (_lock) return _workers.TryGetValue(workerId, out var w) ? w.Blocks.Count : 0;
    }

    /// <summary>The last sequence number applied for the worker, or null before its first snapshot.</summary>
    public long? LastSequence(string workerId)
    {
        lock (_lock) return _workers.TryGetValue(workerId, out var w) ? w.LastSequence : null;
    }

    /// <summary>Does <paramref name="workerId"/> hold <paramref name="hash"/> in any tier?</summary>
    public bool Holds(string workerId, ulong hash)
    {
        lock (_lock) return _workers.TryGetValue(workerId, out var w) && w.Blocks.ContainsKey(hash);
    }

    /// <summary>Replaces everything known about the worker with a snapshot current to <paramref name="sequence"/>.</summary>
    public void ApplySnapshot(string workerId, long sequence, IEnumerable<HeldBlock> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        lock (_lock)
        {
            RemoveWorkerLocked(workerId);
            var entry = new WorkerEntry { LastSequence = sequence };
            _workers[workerId] = entry;
            foreach (var b in blocks) StoreLocked(workerId, entry, b.Hash, b.Tier);
        }
    }

    /// <summary>Applies live events in order; stops at a gap (see the file header).</summary>
    public IndexApplyResult ApplyEvents(string workerId, IReadOnlyList<KvEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        lock (_lock)
        {
            if (!_workers.TryGetValue(workerId, out var entry)) return new IndexApplyResult(IndexApplyStatus.NoSnapshot, 0);
            int applied = 0;
            foreach (var e in events)
            {
                if (e.Sequence <= entry.LastSequence) continue;
                if (e.Sequence != entry.LastSequence + 1)
                    return new IndexApplyResult(IndexApplyStatus.Gap, applied, entry.LastSequence + 1, e.Sequence);
                switch (e.Kind)
                {
                    case KvEventKind.BlockStored:
                        StoreLocked(workerId, entry, e.BlockHash, e.Tier);
                        break;
                    case KvEventKind.BlockRemoved:
                        RemoveLocked(workerId, entry, e.BlockHash, TierBit(e.Tier));
                        break;
                    case KvEventKind.Cleared:
                        byte bit = TierBit(e.Tier);
                        foreach (var hash in entry.Blocks.Where(kv => (kv.Value & bit) != 0).Select(kv => kv.Key).ToList())
                            RemoveLocked(workerId, entry, hash, bit);
                        break;
                }
                entry.LastSequence = e.Sequence;
                applied++;
            }
            return new IndexApplyResult(IndexApplyStatus.Applied, applied);
        }
    }

    /// <summary>Forgets every block of a worker (it left the pool or restarted).</summary>
    public void RemoveWorker(string workerId)
    {
        lock (_lock) RemoveWorkerLocked(workerId);
    }

    /// <summary>
    /// For each worker holding at least the first block: how many leading blocks of
    /// <paramref name="blockHashes"/> it holds, split by the best tier it holds each in.
    /// </summary>
    public Dictionary<string, PrefixOverlap> Match(ReadOnlySpan<ulong> blockHashes)
    {
        var result = new Dictionary<string, PrefixOverlap>(StringComparer.Ordinal);
        if (blockHashes.IsEmpty) return result;
        lock (_lock)
        {
            if (!_holders.TryGetValue(blockHashes[0], out var first)) return result;
            foreach (var h in first) result[h.Worker] = Add(default, h.Tiers);
            var active = new List<string>(result.Keys);
            for (int i = 1; i < blockHashes.Length && active.Count > 0; i++)
            {
                if (!_holders.TryGetValue(blockHashes[i], out var holders)) break;
                for (int a = active.Count - 1; a >= 0; a--)
                {
                    var holder = holders.Find(h => h.Worker == active[a]);
                    if (holder is null)
                    {
                        active.RemoveAt(a);
                        continue;
                    }
                    result[active[a]] = Add(result[active[a]], holder.Tiers);
                }
            }
        }
        return result;
    }

    /// <summary>
    /// How many leading blocks of <paramref name="blockHashes"/> some worker reported in the Remote tier:
    /// the shared store holds them, so every worker can fetch them.
    /// </summary>
    public int SharedRemotePrefix(ReadOnlySpan<ulong> blockHashes)
    {
        byte remote = TierBit(KvTier.Remote);
        int n = 0;
        lock (_lock)
        {
            for (; n < blockHashes.Length; n++)
            {
                if (!_holders.TryGetValue(blockHashes[n], out var holders)) break;
                bool any = false;
                foreach (var h in holders)
                    if ((h.Tiers & remote) != 0) { any = true; break; }
                if (!any) break;
            }
        }
        return n;
    }

    private static PrefixOverlap Add(PrefixOverlap o, byte tiers) =>
        (tiers & TierBit(KvTier.Device)) != 0 ? o with { Blocks = o.Blocks + 1, DeviceBlocks = o.DeviceBlocks + 1 }
        : (tiers & TierBit(KvTier.Host)) != 0 ? o with { Blocks = o.Blocks + 1, HostBlocks = o.HostBlocks + 1 }
        : o with { Blocks = o.Blocks + 1, RemoteBlocks = o.RemoteBlocks + 1 };

    private static byte TierBit(KvTier tier) => (byte)(1 << (int)tier);

    private void StoreLocked(string workerId, WorkerEntry entry, ulong hash, KvTier tier)
    {
        byte bit = TierBit(tier);
        entry.Blocks[hash] = (byte)(entry.Blocks.GetValueOrDefault(hash) | bit);
        if (!_holders.TryGetValue(hash, out var holders))
        {
            holders = new List<Holder>(2);
            _holders[hash] = holders;
        }
        var holder = holders.Find(h => h.Worker == workerId);
        if (holder is null) holders.Add(new Holder(workerId, bit));
        else holder.Tiers |= bit;
    }

    private void RemoveLocked(string workerId, WorkerEntry entry, ulong hash, byte bits)
    {
        if (!entry.Blocks.TryGetValue(hash, out var mask)) return;
        mask = (byte)(mask & ~bits);
        if (mask == 0) entry.Blocks.Remove(hash);
        else entry.Blocks[hash] = mask;
        if (!_holders.TryGetValue(hash, out var holders)) return;
        int i = holders.FindIndex(h => h.Worker == workerId);
        if (i < 0) return;
        if (mask == 0) holders.RemoveAt(i);
        else holders[i].Tiers = mask;
        if (holders.Count == 0) _holders.Remove(hash);
    }

    private void RemoveWorkerLocked(string workerId)
    {
        if (!_workers.Remove(workerId, out var entry)) return;
        foreach (var hash in entry.Blocks.Keys)
        {
            if (!_holders.TryGetValue(hash, out var holders)) continue;
            holders.RemoveAll(h => h.Worker == workerId);
            if (holders.Count == 0) _holders.Remove(hash);
        }
    }
}
