// The block pool: fixed-size KV blocks with reference counts, a map from chained
// block hash to cached block, and an intrusive LRU list of free blocks (arrays of
// prev/next indices, so allocation and freeing allocate nothing). A free block
// keeps its hash and contents until it is reused, which is what makes prefix
// caching work: the LRU evicts the least recently freed cached block first.
// Every change to the set of cached blocks is recorded in the engine's KV event
// log (KvEventLog) for the router's prefix index.
using Platform.Core.KvEvents;

namespace Platform.Engine.KvCache;

public sealed class BlockPool
{
    private const int None = -1;
    private readonly int[] _refCount;
    private readonly ulong[] _hash;
    private readonly ulong[] _parent;
    private readonly bool[] _hashed;
    private readonly int[] _prev;
    private readonly int[] _next;
    private readonly bool[] _inFreeList;
    private readonly Dictionary<ulong, int> _cached;
    private readonly KvEventLog _events;
    private int _freeHead = None, _freeTail = None;

    public int TotalBlocks { get; }
    public int FreeBlocks { get; private set; }
    public int UsedBlocks => TotalBlocks - FreeBlocks;
    public int CachedBlocks => _cached.Count;
    public long PrefixHits { get; private set; }
    public long PrefixQueries { get; private set; }

    public BlockPool(int totalBlocks, KvEventLog events)
    {
        ArgumentNullException.ThrowIfNull(events);
        _events = events;
        if (totalBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(totalBlocks), totalBlocks, "the KV pool needs at least one block");
        TotalBlocks = totalBlocks;
        _refCount = new int[totalBlocks];
        _hash = new ulong[totalBlocks];
        _parent = new ulong[totalBlocks];
        _hashed = new bool[totalBlocks];
        _prev = new int[totalBlocks];
        _next = new int[totalBlocks];
        _inFreeList = new bool[totalBlocks];
        _cached = new Dictionary<ulong, int>(totalBlocks);
        for (int i = 0; i < totalBlocks; i++) PushTail(i);
        FreeBlocks = totalBlocks;
    }

    public int RefCount(int block) => _refCount[block];

    /// <summary>The cached block holding <paramref name="hash"/>, if any (does not take a reference).</summary>
    public bool TryGetCached(ulong hash, out int block) => _cached.TryGetValue(hash, out block);

    public void RecordPrefixLookup(int queriedBlocks, int hitBlocks)
    {
        PrefixQueries += queriedBlocks;
        PrefixHits += hitBlocks;
    }

    /// <summary>Takes a reference on a cached block (removing it from the free list when it was free).</summary>
    public void Touch(int block)
    {
        if (_refCount[block]++ == 0)
        {
            Unlink(block);
            FreeBlocks--;
        }
    }

    /// <summary>Allocates <paramref name="count"/> blocks into <paramref name="into"/>; false (and nothing taken) when too few are free.</summary>
    public bool TryAllocate(int count, List<int> into)
    {
        if (count > FreeBlocks) return false;
        for (int n = 0; n < count; n++)
        {
            int block = _freeHead;
            Unlink(block);
            if (_hashed[block]) Evict(block);
            _refCount[block] = 1;
            into.Add(block);
        }
        FreeBlocks -= count;
        return true;
    }

    /// <summary>
    /// Drops one reference on each block. Blocks reaching zero join the LRU tail in the
    /// order given, so callers pass a sequence's blocks tail-first: its last blocks are
    /// then evicted before its first ones, which other requests are likelier to share.
    /// </summary>
    public void Release(IEnumerable<int> blocks)
    {
        foreach (int block in blocks)
        {
            if (_refCount[block] <= 0) throw new InvalidOperationException($"block {block} released more often than taken");
            if (--_refCount[block] == 0)
            {
                PushTail(block);
                FreeBlocks++;
            }
        }
    }

    /// <summary>Registers a full, computed block under its chained hash (a no-op when the hash is already cached elsewhere).</summary>
    public bool Cache(int block, ulong hash, ulong parent)
    {
        if (_hashed[block] || _cached.ContainsKey(hash)) return false;
        _hashed[block] = true;
        _hash[block] = hash;
        _parent[block] = parent;
        _cached[hash] = block;
        _events.Record(KvEventKind.BlockStored, hash, parent, KvTier.Device);
        return true;
    }

    /// <summary>Forgets every cached hash (blocks in use keep their data but are no longer shared).</summary>
    public void ClearCache()
    {
        foreach (int block in _cached.Values) _hashed[block] = false;
        _cached.Clear();
        _events.Record(KvEventKind.Cleared, 0, 0, KvTier.Device);
    }

    /// <summary>(hash, parent) of every cached block, for a subscriber's full resync.</summary>
    public List<(ulong Hash, ulong Parent)> SnapshotCached()
    {
        var list = new List<(ulong, ulong)>(_cached.Count);
        foreach (int block in _cached.Values) list.Add((_hash[block], _parent[block]));
        return list;
    }

    private void Evict(int block)
    {
        _cached.Remove(_hash[block]);
        _hashed[block] = false;
        _events.Record(KvEventKind.BlockRemoved, _hash[block], _parent[block], KvTier.Device);
    }

    private void PushTail(int block)
    {
        _prev[block] = _freeTail;
        _next[block] = None;
        if (_freeTail != None) _next[_freeTail] = block; else _freeHead = block;
        _freeTail = block;
        _inFreeList[block] = true;
    }

    private void Unlink(int block)
    {
        if (!_inFreeList[block]) throw new InvalidOperationException($"block {block} is not in the free list");
        int p = _prev[block], n = _next[block];
        if (p != None) _next[p] = n; else _freeHead = n;
        if (n != None) _prev[n] = p; else _freeTail = p;
        _inFreeList[block] = false;
    }
}
