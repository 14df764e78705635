// What the KV cache manager and the KV tier see of a request: its tokens, how
// many of them are computed, and its KV state (blocks, chained block hashes,
// what the last prefix lookup found, blocks prefetched from the remote store).
// The scheduler's EngineRequest derives from it, so this layer never needs the
// scheduler's types and the dependency runs one way: Scheduling → KvCache.
namespace Platform.Engine.KvCache;

public abstract class KvSequence
{
    protected KvSequence(List<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        Tokens = tokens;
    }

    /// <summary>Prompt then outputs.</summary>
    public List<int> Tokens { get; }
    /// <summary>Tokens whose KV is in the cache.</summary>
    public int NumComputed { get; set; }
    /// <summary>KV blocks, in sequence order.</summary>
    public List<int> Blocks { get; } = [];
    /// <summary>Chained hashes of the full blocks of Tokens (extended as tokens arrive).</summary>
    public List<ulong> BlockHashes { get; } = [];
    /// <summary>How many leading blocks are already registered in the prefix cache.</summary>
    public int NumCachedBlocks { get; set; }
    /// <summary>Blocks the last prefix lookup loaded from host / remote (set by the KV tier at admission).</summary>
    public int LookupHostBlocks { get; set; }
    public int LookupRemoteBlocks { get; set; }
    /// <summary>Blocks fetched from the remote store before queueing, waiting to be loaded at admission (owned by this sequence).</summary>
    public PrefetchedBlocks? Prefetch { get; set; }
    /// <summary>Positions whose KV lives in this worker's pool (DistAttention keeps the rest on peers).</summary>
    public virtual int LocalTokenLimit => int.MaxValue;

    /// <summary>Gives the prefetched blocks back (they were loaded at admission, or the request ended).</summary>
    public void ReleasePrefetch()
    {
        Prefetch?.Dispose();
        Prefetch = null;
    }
}
