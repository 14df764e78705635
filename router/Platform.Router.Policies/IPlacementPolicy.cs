// The placement seam (YARP's ILoadBalancingPolicy): a policy picks one worker
// from the candidates the router already filtered (healthy, breaker closed, not
// yet tried by this request). Policies are chosen by Name from configuration.
// "No candidate" is a value, not an exception.
namespace Platform.Router.Policies;

/// <param name="BlockHashes">Chained hashes of the prompt's full blocks (Core's BlockHasher with the workers' size and seed).</param>
/// <param name="PromptTokens">Prompt length in tokens.</param>
/// <param name="BlockSize">Tokens per KV block (from the workers' GetInfo).</param>
/// <param name="SessionKey">The session-affinity header's value, or null.</param>
public sealed record PlacementRequest(ulong[] BlockHashes, int PromptTokens, int BlockSize, string? SessionKey = null);

public enum PlacementReason
{
    NoCandidates,
    LowestCost,
    SessionAffinity,
    RoundRobin,
    LeastLoaded,
    Random,
}

/// <param name="Worker">The chosen worker; null only with <see cref="PlacementReason.NoCandidates"/>.</param>
/// <param name="OverlapBlocks">Leading prompt blocks the index says the worker holds (0 if the policy ignores the cache).</param>
/// <param name="Cost">The kv-aware cost of the choice (0 for other policies).</param>
/// <param name="HotSpotAvoided">The cheapest cache-affine worker was skipped by the hot-spot guard.</param>
public sealed record PlacementResult(WorkerState? Worker, PlacementReason Reason, int OverlapBlocks = 0, double Cost = 0, bool HotSpotAvoided = false)
{
    public static readonly PlacementResult None = new(null, PlacementReason.NoCandidates);
}

public interface IPlacementPolicy
{
    /// <summary>The configuration name: kv-aware, round-robin, least-loaded or random.</summary>
    string Name { get; }

    PlacementResult Place(PlacementRequest request, IReadOnlyList<WorkerState> candidates);
}

/// <summary>The load figure the simple policies and the hot-spot guard compare: requests on the worker.</summary>
public static class WorkerLoadMath
{
    /// <summary>
    /// Requests running or queued on the worker: the larger of the worker's last report and this
    /// router's own in-flight count (the report lags by up to one health period; the count misses
    /// other routers' traffic).
    /// </summary>
    public static int Requests(WorkerState worker)
    {
        ArgumentNullException.ThrowIfNull(worker);
        var load = worker.Load;
        return Math.Max(load.Running + load.Waiting, worker.InFlightRequests);
    }

    /// <summary>Prompt tokens queued for prefill on the worker: the larger of the report and this router's own count.</summary>
    public static long QueuedPrefill(WorkerState worker)
    {
        ArgumentNullException.ThrowIfNull(worker);
        return Math.Max(worker.Load.QueuedPrefillTokens, worker.InFlightPrefillTokens);
    }
}
