// The operator's lifetime as a hosted service: campaign for the Lease and, while leader, run a
// fresh controller (new informers, new queue) until leadership ends or the host stops. A
// standby replica stays ready but does nothing. Readiness and liveness read this state.
using k8s;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Platform.Operator.Controller;
using Platform.Operator.Runtime;

namespace Platform.Operator.Hosting;

public sealed partial class OperatorService : BackgroundService, IHealthCheck
{
    private readonly IKubernetes _client;
    private readonly OperatorOptions _options;
    private readonly LongContextModelReconciler _reconciler;
    private readonly OperatorMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggers;
    private readonly LeaseElector _elector;
    private volatile ModelController? _controller;
    private volatile bool _crashed;

    public OperatorService(IKubernetes client, OperatorOptions options, LongContextModelReconciler reconciler, OperatorMetrics metrics, TimeProvider time, ILoggerFactory loggers)
    {
        _client = client;
        _options = options;
        _reconciler = reconciler;
        _metrics = metrics;
        _time = time;
        _loggers = loggers;
        _elector = new LeaseElector(client, options.LeaseSettings(options.ResolveIdentity()), options.InformerTimings, time, loggers.CreateLogger<LeaseElector>());
    }

    public bool IsLeader => _elector.IsLeader;

    public string Identity => _elector.Identity;

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (_crashed)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("the leader-election loop stopped"));
        }

        if (_controller is { } controller && !controller.Synced.IsCompleted)
        {
            return Task.FromResult(HealthCheckResult.Degraded("leader, waiting for the first list of LongContextModels"));
        }

        return Task.FromResult(HealthCheckResult.Healthy(IsLeader ? "leader" : "standby"));
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await _elector.RunAsync(LeadAsync, stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
        {
            _crashed = true;
            LogCrashed(_loggers.CreateLogger<OperatorService>(), ex);
            throw;
        }
    }

    private async Task LeadAsync(CancellationToken cancellationToken)
    {
        var controller = new ModelController(_client, _reconciler, _options.ControllerSettings, _metrics, _time, _loggers);
        _controller = controller;
        _metrics.SetLeader(true);
        try
        {
            await controller.RunAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _metrics.SetLeader(false);
            _controller = null;
        }
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "Leader election loop crashed")]
    private static partial void LogCrashed(ILogger logger, Exception exception);
}
