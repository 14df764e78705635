// Placement configuration (section Router:Placement): which policy, and the
// kv-aware knobs documented in KvAwarePolicy.cs. Validation returns messages
// that say how to fix the value, and the factory turns a name into a policy.
namespace Platform.Router.Policies;

public sealed record KvAwareOptions
{
    public double QueuedPrefillWeight { get; init; } = 1.0;
    public double DecodeLoadWeight { get; init; } = 0.05;
    public double DeviceCredit { get; init; } = 1.0;
    public double HostCredit { get; init; } = 0.8;
    public double RemoteCredit { get; init; } = 0.5;
    public int HotSpotAbsolute { get; init; } = 8;
    public double HotSpotRatio { get; init; } = 2.0;
    public bool SessionAffinity { get; init; } = true;

    public IEnumerable<string> Validate(string prefix)
    {
        foreach (var (name, value) in new[] { ("QueuedPrefillWeight", QueuedPrefillWeight), ("DecodeLoadWeight", DecodeLoadWeight) })
            if (!double.IsFinite(value) || value < 0)
                yield return $"{prefix}:{name} is {value}; set a finite weight >= 0 (0 ignores that load).";
        foreach (var (name, value) in new[] { ("DeviceCredit", DeviceCredit), ("HostCredit", HostCredit), ("RemoteCredit", RemoteCredit) })
            if (!double.IsFinite(value) || value < 0 || value > 1)
                yield return $"{prefix}:{name} is {value}; set a share of a block's prefill between 0 and 1.";
        if (HotSpotAbsolute < 1)
            yield return $"{prefix}:HotSpotAbsolute is {HotSpotAbsolute}; set at least 1 request (a large value turns the guard off).";
        if (!double.IsFinite(HotSpotRatio) || HotSpotRatio < 1)
            yield return $"{prefix}:HotSpotRatio is {HotSpotRatio}; set a ratio >= 1.";
    }
}

public sealed record PlacementOptions
{
    public string Policy { get; init; } = PlacementPolicies.KvAware;
    public KvAwareOptions KvAware { get; init; } = new();

    public IEnumerable<string> Validate(string prefix = "Router:Placement")
    {
        if (!PlacementPolicies.Names.Contains(Policy))
            yield return $"{prefix}:Policy is '{Policy}'; use one of {string.Join(", ", PlacementPolicies.Names)} (e.g. --policy kv-aware).";
        foreach (var e in (KvAware ?? new KvAwareOptions()).Validate(prefix + ":KvAware")) yield return e;
    }
}

public static class PlacementPolicies
{
    public const string KvAware = "kv-aware";
    public const string RoundRobin = "round-robin";
    public const string LeastLoaded = "least-loaded";
    public const string Random = "random";

    public static readonly IReadOnlyList<string> Names = [KvAware, RoundRobin, LeastLoaded, Random];

    /// <summary>The policy named by <paramref name="options"/>; options must be valid (see Validate).</summary>
    public static IPlacementPolicy Create(PlacementOptions options, PrefixIndex index, IRandomSource random)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Policy switch
        {
            KvAware => new KvAwarePolicy(index, options.KvAware, random),
            RoundRobin => new RoundRobinPolicy(),
            LeastLoaded => new LeastLoadedPolicy(random),
            Random => new RandomPolicy(random),
            _ => throw new ArgumentException(string.Join(" ", options.Validate()), nameof(options)),
        };
    }
}
