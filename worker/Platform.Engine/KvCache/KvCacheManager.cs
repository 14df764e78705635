// The seam between scheduler and block pool (after vLLM v1's kv_cache_manager):
// AcquireCachedPrefix, AllocateSlots, CacheFullBlocks and Free, on a KvSequence
// (the KV view of a request; this layer never sees the scheduler's types). Running out of
// blocks is a return value; the scheduler decides whom to preempt.
using Platform.Core.Hashing;

namespace Platform.Engine.KvCache;

public sealed class KvCacheManager
{
    private readonly BlockPool _pool;
    private readonly BlockHasher _hasher;
    private readonly List<int> _scratch = new(64);
    private readonly List<ComputedBlock> _computed = new(64);

    public KvCacheManager(BlockPool pool, BlockHasher hasher)
    {
        _pool = pool;
        _hasher = hasher;
    }

    public BlockPool Pool => _pool;
    /// <summary>The host/remote tiers below the device pool, when enabled.</summary>
    public KvTierService? Tiers { get; set; }
    public int BlockSize => _hasher.BlockSize;

    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    /// <summary>Blocks this worker must hold for the whole of the sequence (its local share under DistAttention).</summary>
    public int LocalBlocksFor(KvSequence request) => BlocksFor(Math.Min(request.Tokens.Count, request.LocalTokenLimit));

    /// <summary>
    /// Takes references on the longest run of cached blocks that prefixes the request's
    /// tokens and returns how many tokens they cover. At least one token is always left
    /// to compute, since the last prompt position must run to produce logits.
    /// </summary>
    public int AcquireCachedPrefix(KvSequence request)
    {
        _hasher.ExtendHashes(request.BlockHashes, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(request.Tokens));
        int usable = Math.Min(request.Tokens.Count - 1, request.LocalTokenLimit) / BlockSize;
        int hits = 0;
        while (hits < usable && hits < request.BlockHashes.Count && _pool.TryGetCached(request.BlockHashes[hits], out int block))
        {
            _pool.Touch(block);
            request.Blocks.Add(block);
            hits++;
        }
        _pool.RecordPrefixLookup(Math.Min(usable, request.BlockHashes.Count), hits);
        request.LookupHostBlocks = 0;
        request.LookupRemoteBlocks = 0;
        if (Tiers is { } tiers && hits < usable)
        {
            tiers.LoadPrefix(request, _pool, _scratch, usable);
            hits = request.Blocks.Count;
        }
        // What was prefetched for the prompt has been loaded, or never will be.
        request.ReleasePrefetch();
        request.NumCachedBlocks = hits;
        return hits * BlockSize;
    }

    /// <summary>Ensures blocks for NumComputed + <paramref name="newTokens"/> tokens; false when the pool is short.</summary>
    public bool AllocateSlots(KvSequence request, int newTokens)
    {
        // A DistAttention sequence holds only its local positions here; creditors hold the rest.
        int needed = BlocksFor(Math.Min(request.NumComputed + newTokens, request.LocalTokenLimit)) - request.Blocks.Count;
        if (needed <= 0) return true;
        _scratch.Clear();
        if (!_pool.TryAllocate(needed, _scratch)) return false;
        request.Blocks.AddRange(_scratch);
        return true;
    }

    /// <summary>Registers the blocks that became full and computed in the prefix cache.</summary>
    public void CacheFullBlocks(KvSequence request)
    {
        int full = Math.Min(request.NumComputed, request.LocalTokenLimit) / BlockSize;
        if (full <= request.NumCachedBlocks) return;
        _hasher.ExtendHashes(request.BlockHashes, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(request.Tokens)[..(full * BlockSize)]);
        _computed.Clear();
        for (int i = request.NumCachedBlocks; i < full; i++)
        {
            ulong parent = i == 0 ? BlockHasher.RootParent : request.BlockHashes[i - 1];
            if (_pool.Cache(request.Blocks[i], request.BlockHashes[i], parent))
                _computed.Add(new ComputedBlock(request.Blocks[i], request.BlockHashes[i], parent));
        }
        // Written through to the tiers in one batch per request and step.
        if (_computed.Count > 0) Tiers?.OnBlocksComputed(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_computed));
        request.NumCachedBlocks = full;
    }

    /// <summary>Releases the request's blocks (tail first) and any prefetched ones, and resets its computed state.</summary>
    public void Free(KvSequence request)
    {
        request.ReleasePrefetch();
        _scratch.Clear();
        for (int i = request.Blocks.Count - 1; i >= 0; i--) _scratch.Add(request.Blocks[i]);
        _pool.Release(_scratch);
        _scratch.Clear();
        request.Blocks.Clear();
        request.NumComputed = 0;
        request.NumCachedBlocks = 0;
    }
}
