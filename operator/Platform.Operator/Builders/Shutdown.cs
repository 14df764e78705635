// How long router and worker pods may take to stop, stated once. The operator tells each process
// its drain time (the worker's --drain-grace-seconds, the router's host shutdown timeout) and derives
// the pods' terminationGracePeriodSeconds from the same constants plus a margin, so the kubelet's
// SIGKILL never lands in the middle of a drain (Kubernetes' default grace of 30 s would cut the
// worker's 30 s drain plus its 15 s stop margin short).
namespace Platform.Operator.Builders;

public static class Shutdown
{
    /// <summary>After SIGTERM a worker lets in-flight streams run this long, then aborts them (--drain-grace-seconds).</summary>
    public const int WorkerDrainSeconds = 30;

    /// <summary>
    /// The worker's host waits the drain grace plus this margin (aborted streams end, servers stop) before it
    /// gives up: WorkerOptions.ShutdownTimeout. A worker test checks the pod's grace covers it.
    /// </summary>
    public const int WorkerStopMarginSeconds = 15;

    /// <summary>
    /// The router's host shutdown timeout: Kestrel lets in-flight requests (streams included) finish for this
    /// long after SIGTERM. Set through DOTNET_SHUTDOWNTIMEOUTSECONDS, which .NET's host reads into HostOptions.
    /// </summary>
    public const int RouterShutdownSeconds = 30;

    /// <summary>Time between the process's own deadline and the kubelet's SIGKILL: flushing logs, exiting.</summary>
    public const int KillMarginSeconds = 10;

    /// <summary>terminationGracePeriodSeconds of worker pods (55 s).</summary>
    public const long WorkerTerminationGraceSeconds = WorkerDrainSeconds + WorkerStopMarginSeconds + KillMarginSeconds;

    /// <summary>terminationGracePeriodSeconds of router pods (40 s).</summary>
    public const long RouterTerminationGraceSeconds = RouterShutdownSeconds + KillMarginSeconds;

    /// <summary>The environment variable .NET's generic host reads its shutdown timeout from (host configuration, DOTNET_ prefix).</summary>
    public const string HostShutdownTimeoutVariable = "DOTNET_SHUTDOWNTIMEOUTSECONDS";
}
