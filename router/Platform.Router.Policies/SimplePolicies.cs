// The cache-blind baselines: round-robin, least-loaded and random. They exist for
// comparison (the benchmark runs kv-aware against them) and as fallbacks.
namespace Platform.Router.Policies;

/// <summary>Cycles through the candidates in id order.</summary>
public sealed class RoundRobinPolicy : IPlacementPolicy
{
    private long _next = -1;

    public string Name => PlacementPolicies.RoundRobin;

    public PlacementResult Place(PlacementRequest request, IReadOnlyList<WorkerState> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Count == 0) return PlacementResult.None;
        long n = Interlocked.Increment(ref _next);
        return new PlacementResult(candidates[(int)(n % candidates.Count)], PlacementReason.RoundRobin);
    }
}

/// <summary>
/// Fewest requests (<see cref="WorkerLoadMath.Requests"/>), then fewest queued prefill tokens;
/// remaining ties go to a random draw so equal workers share the load.
/// </summary>
public sealed class LeastLoadedPolicy(IRandomSource random) : IPlacementPolicy
{
    public string Name => PlacementPolicies.LeastLoaded;

    public PlacementResult Place(PlacementRequest request, IReadOnlyList<WorkerState> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Count == 0) return PlacementResult.None;
        var best = new List<WorkerState>(candidates.Count);
        (int Requests, long Prefill) bestKey = (int.MaxValue, long.MaxValue);
        foreach (var w in candidates)
        {
            var key = (WorkerLoadMath.Requests(w), WorkerLoadMath.QueuedPrefill(w));
            int cmp = key.CompareTo(bestKey);
            if (cmp < 0)
            {
                best.Clear();
                bestKey = key;
            }
            if (cmp <= 0) best.Add(w);
        }
        return new PlacementResult(best[random.Next(best.Count)], PlacementReason.LeastLoaded);
    }
}

/// <summary>A uniform draw from the injected random source.</summary>
public sealed class RandomPolicy(IRandomSource random) : IPlacementPolicy
{
    public string Name => PlacementPolicies.Random;

    public PlacementResult Place(PlacementRequest request, IReadOnlyList<WorkerState> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (candidates.Count == 0) return PlacementResult.None;
        return new PlacementResult(candidates[random.Next(candidates.Count)], PlacementReason.Random);
    }
}

/// <summary>Injected randomness, so tests can fix every draw.</summary>
public interface IRandomSource
{
    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>).</summary>
    int Next(int maxExclusive);
}

/// <summary>Thread-safe wrapper over <see cref="Random"/> (seeded for tests, shared in production).</summary>
public sealed class SystemRandomSource : IRandomSource
{
    private readonly Random _random;
    private readonly Lock _lock = new();

    public SystemRandomSource(int? seed = null) => _random = seed is int s ? new Random(s) : Random.Shared;

    public int Next(int maxExclusive)
    {
        if (ReferenceEquals(_random, Random.Shared)) return _random.Next(maxExclusive);
        lock (_lock) return _random.Next(maxExclusive);
    }
}
