// Health as Kubernetes and the router see it. Liveness (/healthz, tag "live")
// fails only when a restart would help: the model failed to load, the engine
// faulted, or it has work but has finished no step for too long (EngineWatchdog). Readiness (/readyz, tag "ready", and the gRPC health service) needs
// a loaded, healthy engine that is not stalled, and a worker that is not draining.
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Platform.Worker;

public static class HealthTags
{
    public const string Live = "live";
    public const string Ready = "ready";
}

internal sealed class EngineLivenessCheck(EngineHost engines, EngineWatchdog watchdog) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(engines.State switch
        {
            EngineState.Failed => HealthCheckResult.Unhealthy($"the model failed to load: {engines.LoadError}"),
            EngineState.Ready when engines.Engine is { Healthy: false } e => HealthCheckResult.Unhealthy($"the engine faulted: {e.LastError}"),
            EngineState.Ready when watchdog.Stalled() is { } stalled => HealthCheckResult.Unhealthy($"the engine has finished no step for {stalled.TotalSeconds:F0} s"),
            EngineState.Loading => HealthCheckResult.Healthy("loading the model"),
            _ => HealthCheckResult.Healthy(),
        });
}

internal sealed class EngineReadinessCheck(EngineHost engines, EngineWatchdog watchdog) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(engines.Engine switch
        {
            null => HealthCheckResult.Unhealthy(engines.State == EngineState.Failed ? $"the model failed to load: {engines.LoadError}" : "the model is loading"),
            { Healthy: false } e => HealthCheckResult.Unhealthy($"the engine faulted: {e.LastError}"),
            _ when watchdog.Stalled() is { } stalled => HealthCheckResult.Unhealthy($"the engine has finished no step for {stalled.TotalSeconds:F0} s"),
            _ => HealthCheckResult.Healthy(),
        });
}

internal sealed class DrainReadinessCheck(DrainCoordinator drain) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(drain.IsDraining ? HealthCheckResult.Unhealthy("draining: the worker is shutting down") : HealthCheckResult.Healthy());
}
