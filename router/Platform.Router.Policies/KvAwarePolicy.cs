// kv-aware placement: send each request where it will start generating soonest,
// counting the prefill a worker can skip because it already holds the prompt's
// leading KV blocks (Dynamo's cost form, SGLang's hot-spot guard, llm-d's
// affinity by header).
//
// For each candidate worker w (healthy, breaker closed, not yet tried):
//
//   credit_w  = Σ over the leading prompt blocks w holds of TierCredit(best tier of that block on w)
//               TierCredit: Device = DeviceCredit (1.0), Host = HostCredit (0.8), Remote = RemoteCredit (0.5);
//               a block below the device must still be copied up, so it saves less than a full block.
//               The remote store is shared by every worker: past the blocks w itself holds, each further
//               leading block that any worker reported in the Remote tier counts for w as Remote too
//               (w fetches it from the store instead of computing it).
//   prefill_w = max(0, promptTokens − credit_w × blockSize)        prompt tokens w would still compute
//   queued_w  = max(w's reported queued prefill tokens, prompt tokens this router sent w with no first token yet)
//   decode_w  = w's KV blocks in use × blockSize                      active decode context (tokens read per step)
//
//   cost_w    = prefill_w + QueuedPrefillWeight × queued_w + DecodeLoadWeight × decode_w
//
// The worker with the lowest cost wins; ties go to fewer requests, then to the worker holding fewer
// blocks in the index (a new prefix goes where it evicts the least, so groups of requests sharing
// new prefixes spread over the workers instead of piling up by chance), then to the random draw.
//
// Hot-spot guard: with requests_w = max(running + waiting reported, this router's in-flight count)
// and min = the smallest requests_w among the candidates, a worker is hot when
//   requests_w − min ≥ HotSpotAbsolute  and  requests_w ≥ HotSpotRatio × max(min, 1).
// Hot workers are dropped before scoring, so a cache-affine worker that is far busier than the
// least-loaded one loses even with a full prefix hit (the least-loaded worker is never hot).
//
// Session affinity (SessionAffinity = true and the request carries a session key): rendezvous
// hashing (highest XXH3(key ‖ worker id) among the candidates) picks the session's worker, so a
// session stays put while its worker is in the pool and only the sessions of a departed worker
// move. A hot affinity target falls back to the cost above.
//
// Knobs (PlacementOptions.KvAware, validated at start):
//   QueuedPrefillWeight  1.0   tokens of cost per queued prefill token (prefill is FIFO-ish: it delays us one for one)
//   DecodeLoadWeight     0.05  tokens of cost per token of active decode context (decode steps share the batch)
//   DeviceCredit         1.0   share of a device-tier block's prefill that is saved
//   HostCredit           0.8   … of a host-memory block (copy to device instead of recompute)
//   RemoteCredit         0.5   … of a block in the shared remote store (network fetch)
//   HotSpotAbsolute      8     requests above the least-loaded worker before the guard may fire
//   HotSpotRatio         2.0   and this many times its load
//   SessionAffinity      true  honour the session key
using System.IO.Hashing;
using System.Text;

namespace Platform.Router.Policies;

public sealed class KvAwarePolicy : IPlacementPolicy
{
    private readonly PrefixIndex _index;
    private readonly KvAwareOptions _options;
    private readonly IRandomSource _random;

    public KvAwarePolicy(PrefixIndex index, KvAwareOptions options, IRandomSource random)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(random);
        _index = index;
        _options = options;
        _random = random;
    }

    public string Name => PlacementPolicies.KvAware;

    public PlacementResult Place(PlacementRequest request, IReadOnlyList<WorkerState> candidates)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Count == 0) return PlacementResult.None;

        var overlaps = _index.Match(request.BlockHashes);
        int shared = _index.SharedRemotePrefix(request.BlockHashes);
        var cool = WithoutHotSpots(candidates);

        if (_options.SessionAffinity && !string.IsNullOrEmpty(request.SessionKey))
        {
            var target = RendezvousPick(request.SessionKey, candidates);
            if (cool.Contains(target))
                return new PlacementResult(target, PlacementReason.SessionAffinity, Effective(overlaps, target, shared).Blocks, Cost(request, target, overlaps, shared));
        }

        WorkerState? best = null;
        double bestCost = double.PositiveInfinity;
        int bestRequests = int.MaxValue, bestHeld = int.MaxValue;
        int ties = 0;
        foreach (var w in cool)
        {
            double cost = Cost(request, w, overlaps, shared);
            int requests = WorkerLoadMath.Requests(w);
            int held = _index.WorkerBlockCount(w.Id);
            int cmp = best is null ? -1 : (cost, requests, held).CompareTo((bestCost, bestRequests, bestHeld));
            if (cmp < 0)
            {
                best = w;
                bestCost = cost;
                bestRequests = requests;
                bestHeld = held;
                ties = 1;
            }
            else if (cmp == 0 && _random.Next(++ties) == 0)
            {
                // Reservoir sampling over equal candidates: each keeps probability 1/ties.
                best = w;
            }
        }

        bool avoided = false;
        if (cool.Count < candidates.Count)
        {
            // Would a hot worker have won on cost alone? Then the guard changed the decision.
            foreach (var w in candidates)
                if (!cool.Contains(w) && Cost(request, w, overlaps, shared) < bestCost) avoided = true;
        }
        return new PlacementResult(best, PlacementReason.LowestCost, Effective(overlaps, best!, shared).Blocks, bestCost, avoided);
    }

    /// <summary>The cost formula of the file header for one worker (<paramref name="sharedRemoteBlocks"/>: leading blocks in the shared store).</summary>
    public double Cost(PlacementRequest request, WorkerState worker, IReadOnlyDictionary<string, PrefixOverlap> overlaps, int sharedRemoteBlocks = 0)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(worker);
        ArgumentNullException.ThrowIfNull(overlaps);
        var o = Effective(overlaps, worker, sharedRemoteBlocks);
        double credit = o.DeviceBlocks * _options.DeviceCredit + o.HostBlocks * _options.HostCredit + o.RemoteBlocks * _options.RemoteCredit;
        double prefill = Math.Max(0, request.PromptTokens - credit * request.BlockSize);
        double queued = WorkerLoadMath.QueuedPrefill(worker);
        double decode = (double)worker.Load.KvBlocksUsed * request.BlockSize;
        return prefill + _options.QueuedPrefillWeight * queued + _options.DecodeLoadWeight * decode;
    }

    private static PrefixOverlap Overlap(IReadOnlyDictionary<string, PrefixOverlap> overlaps, WorkerState w) =>
        overlaps.TryGetValue(w.Id, out var o) ? o : default;

    /// <summary>w's own overlap, extended by the shared remote store's blocks past it.</summary>
    private static PrefixOverlap Effective(IReadOnlyDictionary<string, PrefixOverlap> overlaps, WorkerState w, int sharedRemoteBlocks)
    {
        var o = Overlap(overlaps, w);
        int extra = sharedRemoteBlocks - o.Blocks;
        return extra > 0 ? o with { Blocks = o.Blocks + extra, RemoteBlocks = o.RemoteBlocks + extra } : o;
    }

    private List<WorkerState> WithoutHotSpots(IReadOnlyList<WorkerState> candidates)
    {
        int min = int.MaxValue;
        foreach (var w in candidates) min = Math.Min(min, WorkerLoadMath.Requests(w));
        var cool = new List<WorkerState>(candidates.Count);
        foreach (var w in candidates)
        {
            int r = WorkerLoadMath.Requests(w);
            bool hot = r - min >= _options.HotSpotAbsolute && r >= _options.HotSpotRatio * Math.Max(min, 1);
            if (!hot) cool.Add(w);
        }
        return cool;
    }

    /// <summary>Highest-random-weight hashing: stable per key, moves only the keys of a departed worker.</summary>
    internal static WorkerState RendezvousPick(string key, IReadOnlyList<WorkerState> candidates)
    {
        WorkerState best = candidates[0];
        ulong bestScore = 0;
        bool first = true;
        foreach (var w in candidates)
        {
            ulong score = XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(key + "\n" + w.Id));
            if (first || score > bestScore || (score == bestScore && string.CompareOrdinal(w.Id, best.Id) < 0))
            {
                best = w;
                bestScore = score;
                first = false;
            }
        }
        return best;
    }
}
