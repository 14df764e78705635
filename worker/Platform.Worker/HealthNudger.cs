// Pushes health to gRPC Watch callers the moment readiness changes (model
// loaded, drain begun) instead of at the next publisher period. Besides being
// faster, this keeps the health service's cached status current: a Watch only
// sends when a published status differs from the cached one, so a cache still
// saying NOT_SERVING from the loading phase would swallow the drain's
// NOT_SERVING after a quick start-then-stop.
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Platform.Worker;

internal sealed partial class HealthNudger(HealthCheckService checks, IEnumerable<IHealthCheckPublisher> publishers, EngineHost engines,
    DrainCoordinator drain, ILogger<HealthNudger> logger) : IHostedService, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();

    public Task StartAsync(CancellationToken cancellationToken)
    {
        engines.Ready.ContinueWith(_ => PublishAsync(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        drain.DrainStarted += () => _ = PublishAsync();
        return Task.CompletedTask;
    }

    private async Task PublishAsync()
    {
        try
        {
            var report = await checks.CheckHealthAsync(_stopping.Token);
            foreach (var publisher in publishers) await publisher.PublishAsync(report, _stopping.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogPublishFailed(logger, e);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken) => await _stopping.CancelAsync();

    public void Dispose() => _stopping.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Publishing a health change failed; Watch callers get it at the next period")]
    private static partial void LogPublishFailed(ILogger logger, Exception exception);
}
