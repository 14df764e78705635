// What the test kubelet is told that a real node would know by itself: which program an image
// runs (its ENTRYPOINT), which local directory backs each PersistentVolumeClaim, and how fast to
// probe and restart. Everything else (args, env, volumes, probes, ports) comes from the pod spec.
namespace Platform.Testing.Kubernetes.Kubelet;

public sealed class TestKubeletOptions
{
    /// <summary>The namespace whose pods this kubelet runs.</summary>
    public required string Namespace { get; init; }

    /// <summary>
    /// An image's entrypoint as a local command (e.g. <c>["dotnet", "/path/platform-worker.dll"]</c>);
    /// null for an image this node cannot run (the pod then stays Pending with ErrImagePull).
    /// The container's own <c>command</c>, when set, replaces it, exactly as in a container runtime.
    /// </summary>
    public required Func<string, string[]?> Entrypoint { get; init; }

    /// <summary>Claim name → local directory (what a PersistentVolume would bind).</summary>
    public IReadOnlyDictionary<string, string> Claims { get; init; } = new Dictionary<string, string>();

    /// <summary>Where pods' volumes, logs and the hosts file live; must not be under /tmp,
    /// which every pod mounts over with its own emptyDir.</summary>
    public string StateDirectory { get; init; } = Path.Combine("/var/tmp", "test-kubelet-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>Probes run at the pod's period but never less often than this (tests cannot wait
    /// 10 s per probe). Readiness then changes after failureThreshold probes at this pace; startup
    /// and liveness kill only after the pod's own budget (failureThreshold × periodSeconds).</summary>
    public TimeSpan MaxProbePeriod { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>First restart delay after a container exits (doubles per restart up to 10×);
    /// a node starts at 10 s.</summary>
    public TimeSpan RestartBackoff { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Extra environment for every container, e.g. DOTNET_ settings of the test machine.
    /// Pod env wins on a clash.</summary>
    public IReadOnlyDictionary<string, string> NodeEnvironment { get; init; } = new Dictionary<string, string>();
}
