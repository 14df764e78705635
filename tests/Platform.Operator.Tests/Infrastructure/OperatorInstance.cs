// One operator replica started in-process exactly as Program.cs builds it (same host, same
// services, health endpoints on a loopback port), with its own Kubernetes client, an identity,
// and short test timings: 1 s lease, 0.8 s renew deadline, 0.2 s retry, 5 ms..1 s backoff, 2 s watchdog
// (the fake sends a bookmark every second on an idle watch).
// Disposing it stops the host, which is how tests kill a leader.
using k8s;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Platform.Operator.Autoscaling;
using Platform.Operator.Controller;
using Platform.Operator.Hosting;
using Platform.Operator.KvStore;

namespace Platform.Operator.Tests.Infrastructure;

public sealed class OperatorInstance : IAsyncDisposable
{
    private readonly WebApplication _app;
    private bool _disposed;

    private OperatorInstance(WebApplication app, string identity)
    {
        _app = app;
        Identity = identity;
        Service = app.Services.GetRequiredService<OperatorService>();
        Metrics = app.Services.GetRequiredService<OperatorMetrics>();
    }

    public string Identity { get; }

    public OperatorService Service { get; }

    public OperatorMetrics Metrics { get; }

    public string Url => _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    public static Task<OperatorInstance> StartAsync(TestCluster cluster, string identity, IRouterLoadSource? load = null, IKvStorePurger? purger = null, params string[] extraArgs) =>
        StartAsync(cluster, identity, services =>
        {
            if (load is not null)
            {
                services.AddSingleton(load);
            }

            if (purger is not null)
            {
                services.AddSingleton(purger);
            }
        }, extraArgs);

    /// <summary>Starts a replica with its services changed by <paramref name="configure"/> (after the operator's own).</summary>
    public static async Task<OperatorInstance> StartAsync(TestCluster cluster, string identity, Action<IServiceCollection> configure, params string[] extraArgs)
    {
        string[] args =
        [
            "--urls=http://127.0.0.1:0",
            "--Logging:LogLevel:Default=" + (Environment.GetEnvironmentVariable("PLATFORM_TEST_LOGLEVEL") ?? "Warning"),
            "--Operator:Identity=" + identity,
            "--Operator:WatchNamespace=" + cluster.Namespace,
            "--Operator:LeaseNamespace=" + cluster.Namespace,
            "--Operator:LeaseName=platform-operator-test",
            "--Operator:LeaseDuration=00:00:01",
            "--Operator:RenewDeadline=00:00:00.8",
            "--Operator:RetryPeriod=00:00:00.2",
            "--Operator:WatchdogTimeout=00:00:02",
            "--Operator:BackoffMax=00:00:01",
            "--Operator:WorkerImage=registry.test/worker:1",
            "--Operator:RouterImage=registry.test/router:1",
            .. extraArgs,
        ];
        var client = cluster.NewClient();
        var app = OperatorHost.Build(args, services =>
        {
            services.AddSingleton<IKubernetes>(client);
            configure(services);
        });
        try
        {
            await app.StartAsync();
        }
        catch (Exception) when (Dispose(app))
        {
            throw;
        }

        return new OperatorInstance(app, identity);
    }

    /// <summary>Disposes a host whose start failed; always false so the exception filter rethrows.</summary>
    private static bool Dispose(WebApplication app)
    {
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return false;
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
