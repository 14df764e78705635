// Operator settings, bound from configuration (section "Operator", environment variables
// Operator__*) and validated on start with messages that say how to fix the value.
using Platform.Operator.Builders;
using Platform.Operator.Controller;
using Platform.Operator.Runtime;

namespace Platform.Operator.Hosting;

public sealed class OperatorOptions
{
    public const string Section = "Operator";

    /// <summary>Namespace to watch; empty watches all namespaces.</summary>
    public string? WatchNamespace { get; set; }

    /// <summary>
    /// Namespace whose pods (Prometheus) may reach the workers' metrics port through each model's
    /// NetworkPolicy; empty adds no such rule. The chart sets it from monitoring.namespace.
    /// </summary>
    public string? MonitoringNamespace { get; set; }

    public string WorkerImage { get; set; } = "ghcr.io/longcontext/platform-worker:latest";
    public string RouterImage { get; set; } = "ghcr.io/longcontext/platform-router:latest";
    public string ImagePullPolicy { get; set; } = "IfNotPresent";

    public string LeaseNamespace { get; set; } = "default";
    public string LeaseName { get; set; } = "platform-operator";

    /// <summary>This replica's name in the Lease; defaults to POD_NAME or the host name plus a random suffix.</summary>
    public string? Identity { get; set; }

    // controller-runtime's defaults: lease 15 s, renew deadline 10 s, retry 2 s.
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);
    public TimeSpan RenewDeadline { get; set; } = TimeSpan.FromSeconds(10);
    public TimeSpan RetryPeriod { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Reconciles run in parallel for different models; one model never runs twice at once.</summary>
    public int Workers { get; set; } = 2;

    public TimeSpan WatchTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>A watch with no event and no bookmark for this long is restarted.</summary>
    public TimeSpan WatchdogTimeout { get; set; } = TimeSpan.FromMinutes(3);

    public TimeSpan BackoffBase { get; set; } = TimeSpan.FromMilliseconds(5);
    public TimeSpan BackoffMax { get; set; } = TimeSpan.FromSeconds(1000);

    public ImageDefaults Images => new(WorkerImage, RouterImage, ImagePullPolicy);

    public MonitoringAccess? Monitoring => string.IsNullOrWhiteSpace(MonitoringNamespace) ? null : new MonitoringAccess(MonitoringNamespace.Trim());

    public LeaseSettings LeaseSettings(string identity) => new(LeaseNamespace, LeaseName, identity, LeaseDuration, RenewDeadline, RetryPeriod);

    public InformerTimings InformerTimings => new(WatchTimeout, WatchdogTimeout, TimeSpan.FromSeconds(1));

    public ControllerSettings ControllerSettings =>
        new(string.IsNullOrEmpty(WatchNamespace) ? null : WatchNamespace, Workers, BackoffBase, BackoffMax, InformerTimings);

    public string ResolveIdentity() =>
        !string.IsNullOrWhiteSpace(Identity) ? Identity
        : Environment.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } pod ? pod
        : Environment.MachineName + "-" + Guid.NewGuid().ToString("N")[..6];

    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(WorkerImage) || string.IsNullOrWhiteSpace(RouterImage))
        {
            errors.Add("Operator:WorkerImage and Operator:RouterImage must name images (set image.worker / image.router in the chart's values.yaml)");
        }

        if (string.IsNullOrWhiteSpace(LeaseNamespace) || string.IsNullOrWhiteSpace(LeaseName))
        {
            errors.Add("Operator:LeaseNamespace and Operator:LeaseName must be set (the chart sets them to the release namespace and name)");
        }

        if (!(RetryPeriod > TimeSpan.Zero && RetryPeriod < RenewDeadline && RenewDeadline < LeaseDuration))
        {
            errors.Add($"need 0 < Operator:RetryPeriod ({RetryPeriod}) < RenewDeadline ({RenewDeadline}) < LeaseDuration ({LeaseDuration}); the defaults are 2s, 10s, 15s");
        }

        if (!string.IsNullOrWhiteSpace(MonitoringNamespace) && !IsDnsLabel(MonitoringNamespace.Trim()))
        {
            errors.Add($"Operator:MonitoringNamespace '{MonitoringNamespace}' is not a namespace name (lower-case letters, digits and '-', at most 63); set monitoring.namespace in the chart's values.yaml, or leave it empty");
        }

        if (Workers is < 1 or > 64)
        {
            errors.Add($"Operator:Workers ({Workers}) must be between 1 and 64");
        }

        if (WatchTimeout < TimeSpan.FromSeconds(1) || WatchdogTimeout < TimeSpan.FromSeconds(1))
        {
            errors.Add("Operator:WatchTimeout and Operator:WatchdogTimeout must be at least 1s");
        }

        if (BackoffBase <= TimeSpan.Zero || BackoffMax < BackoffBase)
        {
            errors.Add("Operator:BackoffBase must be positive and Operator:BackoffMax at least BackoffBase");
        }

        return errors;
    }

    private static bool IsDnsLabel(string name) =>
        name.Length is > 0 and <= 63 && char.IsAsciiLetterOrDigit(name[0]) && char.IsAsciiLetterOrDigit(name[^1])
        && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');
}
