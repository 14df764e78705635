// Decides, each step, which requests run and how many of their tokens (vLLM's
// max_num_batched_tokens with decodes first, plus a bound on the step's time).
// The order of a step:
//   1. decodes: every running request that needs one token gets it, first;
//   2. running partial prefills continue. While requests wait to be admitted
//      they get a guaranteed share (half of what is left of the step, at least
//      one block each, and at least a quarter of a step's cost however many
//      decodes there are), so a stream of short prompts cannot starve a long one
//      and a long one cannot hold the whole step while others wait; with
//      nothing waiting they get everything;
//   3. waiting requests are admitted in arrival order while the budget, the
//      sequence limit and free blocks allow (the first one always gets at
//      least a block of progress);
//   4. what is left of the step goes back to the prefills capped in 2.
// "The budget" is two bounds: MaxBatchTokens tokens, and a step cost in flops
// (StepCostModel: linear plus attention flops, a measured rate times
// TargetStepMs). The flop bound is what keeps a step near 32K of context as
// short as one at context 0: the same 512 tokens cost ten times more there.
// A chunk of four blocks or more that a bound cuts ends on a block boundary,
// so its blocks become full and enter the prefix cache.
// When blocks run out, the most recently admitted running request that is not
// already part of this step is preempted: its blocks go back to the pool (they
// stay in the prefix cache) and it is recomputed later, so memory pressure
// costs time, never a failed request. After a preemption nothing new is
// admitted in that step.
using Platform.Engine.KvCache;

namespace Platform.Engine.Scheduling;

public readonly record struct ScheduledRequest(EngineRequest Request, int NumTokens);

public sealed class Scheduler
{
    private readonly KvCacheManager _kv;
    private readonly LinkedList<EngineRequest> _waiting = new();
    private readonly List<EngineRequest> _running = [];
    private readonly List<ScheduledRequest> _scheduled = [];
    private readonly HashSet<EngineRequest> _inStep = [];
    private readonly List<EngineRequest> _snapshot = [];
    /// <summary>Indices in _scheduled of running prefills that got less than they could use (topped up last).</summary>
    private readonly List<int> _capped = [];
    private int _tokens;
    private double _flops;
    private bool _preempted;

    public Scheduler(KvCacheManager kv, int maxBatchTokens, int maxRunning, StepCostModel? cost = null)
    {
        if (maxBatchTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxBatchTokens), maxBatchTokens, "the step token budget must be positive");
        if (maxRunning < 1) throw new ArgumentOutOfRangeException(nameof(maxRunning), maxRunning, "at least one request must be able to run");
        _kv = kv;
        MaxBatchTokens = maxBatchTokens;
        MaxRunning = maxRunning;
        Cost = cost ?? new StepCostModel(0, 0, TimeSpan.Zero);
    }

    public int MaxBatchTokens { get; }
    public int MaxRunning { get; }
    /// <summary>The step cost bound (its rate is learned from ObserveStep).</summary>
    public StepCostModel Cost { get; }
    /// <summary>The least progress a prefill that must progress makes in one step: one block.</summary>
    public int MinChunkTokens => _kv.BlockSize;
    /// <summary>Predicted flops of the step planned last.</summary>
    public double PlannedFlops { get; private set; }
    /// <summary>Tokens of the step planned last.</summary>
    public int PlannedTokens { get; private set; }
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
        _inStep.Clear();
        _capped.Clear();
        _tokens = MaxBatchTokens;
        _flops = Cost.StepFlopBudget;
        _preempted = false;
        PlannedFlops = 0;
        PlannedTokens = 0;
        bool memoryShort = false;

        // 1. Decodes first.
        _snapshot.Clear();
        _snapshot.AddRange(_running);
        foreach (var request in _snapshot)
        {
            if (_tokens == 0) break;
            if (request.Status != RequestStatus.Running || request.RemainingTokens != 1) continue;
            if (!Place(request, 1, impossible))
            {
                memoryShort = true;
                break;
            }
        }

        // 2. Running partial prefills: a guaranteed share while others wait, everything otherwise.
        if (!memoryShort)
        {
            bool othersWait = !_preempted && _waiting.Count > 0 && _running.Count < MaxRunning;
            int shareTokens = othersWait ? Math.Max(MinChunkTokens, _tokens / 2) : _tokens;
            // However many decodes there are, prefills may spend a quarter of a step: decodes cannot starve them.
            double shareFlops = Math.Max(othersWait ? _flops / 2 : _flops, Cost.StepFlopBudget / 4);
            _snapshot.Clear();
            _snapshot.AddRange(_running);
            foreach (var request in _snapshot)
            {
                if (_tokens == 0) break;
                if (request.Status != RequestStatus.Running || _inStep.Contains(request)) continue;
                int n = ChunkFor(request, request.NumComputed, Math.Min(_tokens, Math.Max(MinChunkTokens, shareTokens)), shareFlops, guaranteed: true);
                if (n == 0) continue;
                double flops = Cost.ChunkFlops(n, request.NumComputed);
                if (!Place(request, n, impossible))
                {
                    memoryShort = true;
                    break;
                }
                shareTokens -= n;
                shareFlops -= flops;
                if (othersWait && n < request.RemainingTokens) _capped.Add(_scheduled.Count - 1);
            }
        }

        // 3. Admission in arrival order; never in a step that had to preempt.
        if (!_preempted && !memoryShort)
        {
            bool first = true;
            while (_waiting.First is { } node && _tokens > 0 && _running.Count < MaxRunning)
            {
                var request = node.Value;
                if (_kv.LocalBlocksFor(request) > _kv.Pool.TotalBlocks)
                {
                    _waiting.RemoveFirst();
                    impossible.Add(request);
                    continue;
                }
                if (!first && _flops <= 0) break;
                if (request.Blocks.Count == 0) request.NumComputed = _kv.AcquireCachedPrefix(request);
                int n = ChunkFor(request, request.NumComputed, _tokens, _flops, guaranteed: first);
                if (n == 0 || !_kv.AllocateSlots(request, n))
                {
                    // No room in this step, or not enough memory now: hand back the prefix references and wait.
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
                AddToStep(request, n);
                first = false;
            }
        }

        // 4. What is left goes back to the prefills that were held to their share (no preemption for that).
        foreach (int index in _capped)
        {
            if (_tokens == 0 || _flops <= 0) break;
            var s = _scheduled[index];
            var request = s.Request;
            int from = request.NumComputed + s.NumTokens;
            int extra = ChunkFor(request, from, _tokens, _flops, guaranteed: false);
            if (from + extra < request.Tokens.Count && s.NumTokens + extra >= 4 * _kv.BlockSize)
                extra = Math.Max(0, (from + extra) / _kv.BlockSize * _kv.BlockSize - from);  // the whole chunk ends on a block boundary
            if (extra == 0 || !_kv.AllocateSlots(request, s.NumTokens + extra)) continue;
            double added = Cost.ChunkFlops(s.NumTokens + extra, request.NumComputed) - Cost.ChunkFlops(s.NumTokens, request.NumComputed);
            _scheduled[index] = s with { NumTokens = s.NumTokens + extra };
            _tokens -= extra;
            _flops -= added;
            PlannedFlops += added;
            PlannedTokens += extra;
        }
        return _scheduled;
    }

    /// <summary>
    /// Tokens of the request to compute from position <paramref name="from"/>: at most the remaining tokens,
    /// <paramref name="tokenCap"/>, and what <paramref name="flopCap"/> pays for; at least one block (or the rest)
    /// when <paramref name="guaranteed"/>. A chunk of four blocks or more that is cut short ends on a block boundary. A DistAttention
    /// sequence's chunk never crosses from its local positions to its remote ones: the two kinds run through
    /// different forward passes.
    /// </summary>
    private int ChunkFor(EngineRequest request, int from, int tokenCap, double flopCap, bool guaranteed)
    {
        int cap = Math.Min(request.Tokens.Count - from, tokenCap);
        int local = request.LocalTokenLimit;
        if (from < local && from + cap > local) cap = local - from;
        if (cap <= 0) return 0;
        int n = Cost.MaxTokensWithin(flopCap, from, cap);
        if (guaranteed) n = Math.Max(n, Math.Min(cap, MinChunkTokens));
        if (n < cap && n >= 4 * _kv.BlockSize)
        {
            int alignedEnd = (from + n) / _kv.BlockSize * _kv.BlockSize;
            if (alignedEnd > from) n = alignedEnd - from;
        }
        return n;
    }

    /// <summary>
    /// Allocates <paramref name="n"/> slots for a running request, preempting the lowest-priority running requests
    /// not already in this step until they fit; false when the request itself had to go.
    /// </summary>
    private bool Place(EngineRequest request, int n, List<EngineRequest> impossible)
    {
        while (!_kv.AllocateSlots(request, n))
        {
            // The request itself is running and not in the step, so there is always a victim.
            var victim = LastRunningOutsideStep();
            Preempt(victim);
            _preempted = true;
            if (victim != request) continue;
            if (_running.Count == 0 && _kv.LocalBlocksFor(request) > _kv.Pool.TotalBlocks)
            {
                _waiting.Remove(request);
                impossible.Add(request);
            }
            return false;
        }
        AddToStep(request, n);
        return true;
    }

    private EngineRequest LastRunningOutsideStep()
    {
        for (int i = _running.Count - 1; i >= 0; i--)
            if (!_inStep.Contains(_running[i])) return _running[i];
        throw new InvalidOperationException("no running request outside the step to preempt");
    }

    private void AddToStep(EngineRequest request, int n)
    {
        double flops = Cost.ChunkFlops(n, request.NumComputed);
        _scheduled.Add(new ScheduledRequest(request, n));
        _inStep.Add(request);
        _tokens -= n;
        _flops -= flops;
        PlannedFlops += flops;
        PlannedTokens += n;
    }

    /// <summary>The wall time of the step planned last: teaches the cost model the achieved rate (steps of a block or more).</summary>
    public void ObserveStep(TimeSpan elapsed)
    {
        if (PlannedTokens >= MinChunkTokens) Cost.Observe(PlannedFlops, elapsed);
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
