// The prefix-cache hit rate an oracle router would get on a workload trace,
// computed by simulation with the engine's own caching rules:
//  * blocks of BlockSize tokens, chained hashes (Core's BlockHasher);
//  * a request reuses the longest run of leading blocks the cache holds, but at
//    most (promptTokens − 1) / BlockSize blocks (the last prompt token is always
//    computed, as in KvCacheManager.AcquireCachedPrefix); cached tokens = blocks × BlockSize;
//  * after a request, every full block of its computed tokens (prompt plus all
//    but the last output token) is cached. Output blocks get unique ids: the
//    trace's recorded answers never equal what the model generated.
//
// Two oracles, both processing the trace sequentially (each request finishes
// before the next arrives, so no two requests compete for blocks and no prefix
// is still being computed when the next turn needs it):
//  * Unbounded: one cache of infinite size shared by all workers. The reuse the
//    workload offers at all; no placement can beat it.
//  * PerWorkerLru: the real topology, N workers with C blocks each, evicting
//    the least recently used block (a finished request's blocks are freed tail
//    first, so its leading blocks stay longest, as in BlockPool). The oracle
//    knows every worker's exact cache and sends each request to the worker with
//    the longest match; ties (e.g. no match anywhere) go to the worker that has
//    received the fewest prompt tokens so far, then the lowest index. This is
//    greedy with perfect knowledge, not a proven optimum over all placements.
using Platform.Core.Hashing;

namespace Platform.Bench.Router;

public sealed record OracleResult(string Name, long PromptTokens, long CachedTokens)
{
    public double HitRate => PromptTokens == 0 ? 0 : (double)CachedTokens / PromptTokens;
}

public static class PrefixCacheOracle
{
    /// <summary>One infinite cache: every block computed before is a hit.</summary>
    public static OracleResult Unbounded(IReadOnlyList<WorkloadRequest> trace, int blockSize)
    {
        ArgumentNullException.ThrowIfNull(trace);
        var hasher = new BlockHasher(blockSize, seed: 0);
        var seen = new HashSet<ulong>();
        long prompt = 0, cached = 0;
        foreach (var r in trace)
        {
            var hashes = hasher.HashPrefix(r.Prompt);
            int usable = Math.Min(hashes.Length, (r.Prompt.Length - 1) / blockSize);
            int hits = 0;
            while (hits < usable && seen.Contains(hashes[hits])) hits++;
            prompt += r.Prompt.Length;
            cached += (long)hits * blockSize;
            seen.UnionWith(hashes);
        }
        return new OracleResult("unbounded", prompt, cached);
    }

    /// <summary><paramref name="workers"/> LRU caches of <paramref name="blocksPerWorker"/> blocks, best-match placement.</summary>
    public static OracleResult PerWorkerLru(IReadOnlyList<WorkloadRequest> trace, int blockSize, int workers, int blocksPerWorker)
    {
        ArgumentNullException.ThrowIfNull(trace);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocksPerWorker, 1);
        var hasher = new BlockHasher(blockSize, seed: 0);
        var caches = Enumerable.Range(0, workers).Select(_ => new LruBlocks(blocksPerWorker)).ToArray();
        var assigned = new long[workers];
        long prompt = 0, cached = 0;
        ulong junk = 0;
        foreach (var r in trace)
        {
            var hashes = hasher.HashPrefix(r.Prompt);
            int usable = Math.Min(hashes.Length, (r.Prompt.Length - 1) / blockSize);
            int best = 0, bestHits = -1;
            for (int w = 0; w < workers; w++)
            {
                int hits = caches[w].Match(hashes, usable);
                if (hits > bestHits || (hits == bestHits && assigned[w] < assigned[best]))
                {
                    best = w;
                    bestHits = hits;
                }
            }
            prompt += r.Prompt.Length;
            cached += (long)bestHits * blockSize;
            assigned[best] += r.Prompt.Length;

            // Cached after the request: full blocks of prompt + output − 1 computed tokens.
            int computedBlocks = (r.Prompt.Length + r.MaxTokens - 1) / blockSize;
            var stored = new List<ulong>(computedBlocks);
            stored.AddRange(hashes.Take(Math.Min(hashes.Length, computedBlocks)));
            // Blocks holding generated tokens: never equal to a trace block. High bit set, counter below.
            while (stored.Count < computedBlocks) stored.Add(0x8000_0000_0000_0000UL | junk++);
            // Freed tail first: insert from the last block to the first so block 0 is the most recent.
            for (int i = stored.Count - 1; i >= 0; i--) caches[best].Touch(stored[i]);
        }
        return new OracleResult($"per-worker LRU ({workers} × {blocksPerWorker} blocks)", prompt, cached);
    }

    /// <summary>A fixed-capacity LRU set of block hashes.</summary>
    private sealed class LruBlocks(int capacity)
    {
        private readonly LinkedList<ulong> _order = new();
        private readonly Dictionary<ulong, LinkedListNode<ulong>> _nodes = [];

        public int Match(ulong[] hashes, int usable)
        {
            int hits = 0;
            while (hits < usable && _nodes.ContainsKey(hashes[hits])) hits++;
            return hits;
        }

        /// <summary>Makes <paramref name="hash"/> the most recently used block, evicting the oldest when full.</summary>
        public void Touch(ulong hash)
        {
            if (_nodes.TryGetValue(hash, out var node))
            {
                _order.Remove(node);
                _order.AddFirst(node);
                return;
            }
            if (_nodes.Count == capacity)
            {
                var oldest = _order.Last!;
                _order.RemoveLast();
                _nodes.Remove(oldest.Value);
            }
            _nodes[hash] = _order.AddFirst(hash);
        }
    }
}
