// Health as Kubernetes and the router see it. Liveness (/healthz, tag "live")
// fails only when a restart would help: the model failed to load or the engine
// faulted. Readiness (/readyz, tag "ready", and the gRPC health service) needs
// a loaded, healthy engine and a worker that is not draining.
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Platform.Worker;

public static class HealthTags
{
    public const string Live = "live";
    public const string Ready = "ready";
}

internal sealed class EngineLivenessCheck(EngineHost engines) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(engines.State switch
        {
            EngineState.Failed => HealthCheckResult.Unhealthy($"the model failed to load: {engines.LoadError}"),
            EngineState.Ready when engines.Engine is { Healthy: false } e => HealthCheckResult.Unhealthy($"the engine faulted: {e.LastError}"),
            EngineState.Loading => HealthCheckResult.Healthy("loading the model"),
            _ => HealthCheckResult.Healthy(),
        });
}

internal sealed class EngineReadinessCheck(EngineHost engines) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(engines.Engine switch
        {
            null => HealthCheckResult.Unhealthy(engines.State == EngineState.Failed ? $"the model failed to load: {engines.LoadError}" : "the model is loading"),
            { Healthy: false } e => HealthCheckResult.Unhealthy($"the engine faulted: {e.LastError}"),
            _ => HealthCheckResult.Healthy(),
        });
}

internal sealed class DrainReadinessCheck(DrainCoordinator drain) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(drain.IsDraining ? HealthCheckResult.Unhealthy("draining: the worker is shutting down") : HealthCheckResult.Healthy());
}
