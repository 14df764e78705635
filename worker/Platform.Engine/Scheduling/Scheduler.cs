// Decides, each step, which requests run and how many of their tokens. Running
// requests go first (decodes cost one token each; a partial prefill continues
// with as much as the budget allows), then waiting requests are admitted in
// arrival order while the token budget, the sequence limit and free blocks
// allow. A long prompt therefore prefills in chunks between decode steps.
// When blocks run out, the most recently admitted running request is preempted:
// its blocks go back to the pool (they stay in the prefix cache) and it is
// recomputed later, so memory pressure costs time, never a failed request.
using Platform.Engine.KvCache;

namespace Platform.Engine.Scheduling;

public readonly record struct ScheduledRequest(EngineRequest Request, int NumTokens);

public sealed class Scheduler
{
    private readonly KvCacheManager _kv;
    private readonly LinkedList<EngineRequest> _waiting = new();
    private readonly List<EngineRequest> _running = [];
    private readonly List<ScheduledRequest> _scheduled = [];

    public Scheduler(KvCacheManager kv, int maxBatchTokens, int maxRunning)
    {
        if (maxBatchTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxBatchTokens), maxBatchTokens, "the step token budget must be positive");
        if (maxRunning < 1) throw new ArgumentOutOfRangeException(nameof(maxRunning), maxRunning, "at least one request must be able to run");
        _kv = kv;
        MaxBatchTokens = maxBatchTokens;
        MaxRunning = maxRunning;
    }

    public int MaxBatchTokens { get; }
    public int MaxRunning { get; }
    public int WaitingCount => _waiting.Count;
    public int RunningCount => _running.Count;
    public long TotalPreemptions { get; private set; }
    public bool HasWork => _waiting.Count > 0 || _running.Count > 0;
    public IReadOnlyList<EngineRequest> Running => _running;
    public IEnumerable<EngineRequest> Waiting => _waiting;

    /// <summary>Prompt tokens still to be computed across all requests (the router's "queued prefill").</summary>
    public long QueuedPrefillTokens
    {
        get
        {
            long total = 0;
            foreach (var r in _waiting) total += r.RemainingTokens;
            foreach (var r in _running) if (r.RemainingTokens > 1) total += r.RemainingTokens;
            return total;
        }
    }

    public void Add(EngineRequest request)
    {
        request.Status = RequestStatus.Waiting;
        _waiting.AddLast(request);
    }

    /// <summary>Removes a request wherever it is and frees its blocks.</summary>
    public void Remove(EngineRequest request)
    {
        if (request.Status == RequestStatus.Running) _running.Remove(request);
        else if (request.Status == RequestStatus.Waiting) _waiting.Remove(request);
        _kv.Free(request);
        request.Status = RequestStatus.Finished;
        request.Dist?.Release();
    }

    /// <summary>Plans one step. Requests that can never fit in the pool are returned in <paramref name="impossible"/>.</summary>
    public IReadOnlyList<ScheduledRequest> Schedule(List<EngineRequest> impossible)
    {
        _scheduled.Clear();
        int budget = MaxBatchTokens;
        bool preempted = false;

        for (int i = 0; i < _running.Count && budget > 0; i++)
        {
            var request = _running[i];
            int n = ChunkOf(request, budget);
            bool placed = false;
            while (true)
            {
                if (_kv.AllocateSlots(request, n)) { placed = true; break; }
                // Preempt the lowest-priority (last) running request; possibly this one.
                var victim = _running[^1];
                Preempt(victim);
                preempted = true;
                if (victim == request) break;
            }
            if (!placed)
            {
                if (_running.Count == 0 && _kv.LocalBlocksFor(request) > _kv.Pool.TotalBlocks)
                {
                    _waiting.Remove(request);
                    impossible.Add(request);
                }
                break;
            }
            _scheduled.Add(new ScheduledRequest(request, n));
            budget -= n;
        }

        if (!preempted)
        {
            while (_waiting.First is { } node && budget > 0 && _running.Count < MaxRunning)
            {
                var request = node.Value;
                if (_kv.LocalBlocksFor(request) > _kv.Pool.TotalBlocks)
                {
                    _waiting.RemoveFirst();
                    impossible.Add(request);
                    continue;
                }
                if (request.Blocks.Count == 0) request.NumComputed = _kv.AcquireCachedPrefix(request);
                int n = ChunkOf(request, budget);
                if (!_kv.AllocateSlots(request, n))
                {
                    // Not enough memory now: hand back the prefix references and wait.
                    _kv.Free(request);
                    break;
                }
                if (request.CachedPromptTokens < 0)
                {
                    request.CachedPromptTokens = Math.Min(request.NumComputed, request.PromptLength);
                    request.CachedRemoteTokens = Math.Min(request.LookupRemoteBlocks * _kv.BlockSize, request.CachedPromptTokens);
                    request.CachedHostTokens = Math.Min(request.LookupHostBlocks * _kv.BlockSize, request.CachedPromptTokens - request.CachedRemoteTokens);
                }
                _waiting.RemoveFirst();
                request.Status = RequestStatus.Running;
                _running.Add(request);
                _scheduled.Add(new ScheduledRequest(request, n));
                budget -= n;
            }
        }
        return _scheduled;
    }

    /// <summary>
    /// Tokens of the request to compute this step. A DistAttention sequence's chunk never crosses from
    /// its local positions to its remote ones: the two kinds run through different forward passes.
    /// </summary>
    private static int ChunkOf(EngineRequest request, int budget)
    {
        int n = Math.Min(request.RemainingTokens, budget);
        int local = request.LocalTokenLimit;
        if (request.NumComputed < local && request.NumComputed + n > local) n = local - request.NumComputed;
        return n;
    }

    /// <summary>Marks the scheduled tokens computed and registers newly full blocks in the prefix cache.</summary>
    public void Commit(IReadOnlyList<ScheduledRequest> scheduled)
    {
        foreach (var s in scheduled)
        {
            s.Request.NumComputed += s.NumTokens;
            _kv.CacheFullBlocks(s.Request);
        }
    }

    public void Finish(EngineRequest request)
    {
        _running.Remove(request);
        _kv.Free(request);
        request.Status = RequestStatus.Finished;
        request.Dist?.Release();
    }

    private void Preempt(EngineRequest request)
    {
        _running.Remove(request);
        _kv.Free(request);
        request.Status = RequestStatus.Waiting;
        request.Preemptions++;
        TotalPreemptions++;
        _waiting.AddFirst(request);
    }
}
