// Composition of the operator process: options (validated on start), the Kubernetes client
// (in-cluster, else $KUBECONFIG or ~/.kube/config), reconciler, leader-elected controller, /healthz, /readyz
// and Prometheus /metrics. Tests build the same host with their own client and short timings.
using k8s;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using Platform.Operator.Autoscaling;
using Platform.Operator.Controller;
using Platform.Operator.KvStore;
using Platform.Operator.Runtime;

namespace Platform.Operator.Hosting;

public static class OperatorHost
{
    public static WebApplication Build(string[] args, Action<IServiceCollection>? overrides = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        AddOperator(builder.Services, builder.Configuration);
        overrides?.Invoke(builder.Services);
        var app = builder.Build();
        // Liveness fails only when the election loop died; readiness also waits for the first list.
        app.MapHealthChecks("/healthz", new HealthCheckOptions { ResultStatusCodes = { [HealthStatus.Degraded] = StatusCodes.Status200OK } });
        app.MapHealthChecks("/readyz", new HealthCheckOptions { ResultStatusCodes = { [HealthStatus.Degraded] = StatusCodes.Status503ServiceUnavailable } });
        app.MapPrometheusScrapingEndpoint("/metrics");
        return app;
    }

    public static void AddOperator(IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<OperatorOptions>().Bind(configuration.GetSection(OperatorOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<OperatorOptions>, OperatorOptionsValidator>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<OperatorOptions>>().Value);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IKubernetes>(_ => new Kubernetes(ClientConfiguration()));
        services.AddHttpClient<IRouterLoadSource, PrometheusRouterLoadSource>(http => http.Timeout = TimeSpan.FromSeconds(5));
        services.TryAddSingleton<IKvStorePurger, RedisKvStorePurger>();
        services.AddSingleton<OperatorMetrics>();
        services.AddSingleton<EventRecorder>();
        services.AddSingleton(sp => new LongContextModelReconciler(
            sp.GetRequiredService<IKubernetes>(),
            sp.GetRequiredService<OperatorOptions>().Images,
            sp.GetRequiredService<OperatorOptions>().Monitoring,
            sp.GetRequiredService<IRouterLoadSource>(),
            sp.GetRequiredService<IKvStorePurger>(),
            sp.GetRequiredService<EventRecorder>(),
            sp.GetRequiredService<OperatorMetrics>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<LongContextModelReconciler>>()));
        services.AddSingleton<OperatorService>();
        services.AddHostedService(sp => sp.GetRequiredService<OperatorService>());
        services.AddHealthChecks().AddCheck<OperatorService>("operator");
        services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(OperatorMetrics.MeterName).AddPrometheusExporter());
    }

    /// <summary>In a pod the service account; elsewhere $KUBECONFIG (one file or a list, as kubectl
    /// reads it), else ~/.kube/config.</summary>
    private static KubernetesClientConfiguration ClientConfiguration() =>
        KubernetesClientConfiguration.IsInCluster() ? KubernetesClientConfiguration.InClusterConfig()
        : Environment.GetEnvironmentVariable("KUBECONFIG") is { Length: > 0 } ? KubernetesClientConfiguration.BuildDefaultConfig()
        : KubernetesClientConfiguration.BuildConfigFromConfigFile();

    private sealed class OperatorOptionsValidator : IValidateOptions<OperatorOptions>
    {
        public ValidateOptionsResult Validate(string? name, OperatorOptions options)
        {
            var errors = options.Validate();
            return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
        }
    }
}
