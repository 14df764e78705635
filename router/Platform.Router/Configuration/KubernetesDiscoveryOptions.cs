// Settings of Kubernetes discovery (section "Router:Kubernetes"; used with
// Router:Discovery = kubernetes). The router watches the EndpointSlices of the
// workers' headless Service and talks gRPC to each serving endpoint on the
// named port. The operator passes these as switches (docs/operator.md).
using System.Text.RegularExpressions;

namespace Platform.Router.Configuration;

public sealed partial record KubernetesDiscoveryOptions
{
    /// <summary>The headless worker Service; its EndpointSlices carry the label kubernetes.io/service-name=this.</summary>
    public string? WorkerService { get; init; }

    /// <summary>Namespace of the Service; empty = the kubeconfig context's or the pod's own namespace.</summary>
    public string? Namespace { get; init; }

    /// <summary>Name of the EndpointSlice port that serves the workers' gRPC.</summary>
    public string PortName { get; init; } = "grpc";

    /// <summary>A kubeconfig file; empty = the in-cluster service-account configuration.</summary>
    public string? Kubeconfig { get; init; }

    /// <summary>Server-side timeout of one watch call; the router then resumes from the last version seen.
    /// A watch open longer than this plus a minute is considered dead and restarted (watchdog).</summary>
    public int WatchTimeoutSeconds { get; init; } = 300;

    /// <summary>First delay after a failed list or watch; doubles per consecutive failure (with jitter) …</summary>
    public int ReconnectBaseMs { get; init; } = 500;

    /// <summary>… up to this.</summary>
    public int ReconnectMaxMs { get; init; } = 30_000;

    public IEnumerable<string> Validate(string section)
    {
        if (string.IsNullOrWhiteSpace(WorkerService))
            yield return $"{section}:WorkerService is not set; pass --worker-service NAME (the workers' headless Service, <model>-workers when the operator deploys it).";
        else if (!DnsLabel().IsMatch(WorkerService))
            yield return $"{section}:WorkerService '{WorkerService}' is not a Service name; use lower-case letters, digits and '-' (at most 63).";
        if (!string.IsNullOrEmpty(Namespace) && !DnsLabel().IsMatch(Namespace))
            yield return $"{section}:Namespace '{Namespace}' is not a namespace name; use lower-case letters, digits and '-' (at most 63).";
        if (string.IsNullOrWhiteSpace(PortName))
            yield return $"{section}:PortName is empty; pass --worker-port-name with the Service's gRPC port name (grpc).";
        if (!string.IsNullOrEmpty(Kubeconfig) && !File.Exists(Kubeconfig))
            yield return $"{section}:Kubeconfig '{Kubeconfig}' does not exist; pass --kubeconfig PATH to a kubeconfig file, or leave it out inside a pod.";
        if (string.IsNullOrEmpty(Kubeconfig) && !k8s.KubernetesClientConfiguration.IsInCluster())
            yield return $"{section}:Kubeconfig is not set and the router is not running in a pod (no service-account token); pass --kubeconfig PATH, or use --discovery static.";
        if (WatchTimeoutSeconds is < 1 or > 3600)
            yield return $"{section}:WatchTimeoutSeconds is {WatchTimeoutSeconds}; use 1..3600 (300 is usual).";
        if (ReconnectBaseMs <= 0)
            yield return $"{section}:ReconnectBaseMs is {ReconnectBaseMs}; set a positive delay such as 500.";
        if (ReconnectMaxMs < ReconnectBaseMs)
            yield return $"{section}:ReconnectMaxMs is {ReconnectMaxMs}; make it at least ReconnectBaseMs ({ReconnectBaseMs}).";
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    private static partial Regex DnsLabel();
}
