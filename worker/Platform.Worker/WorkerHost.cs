// Assembles the worker process: configuration (command-line switches mapped
// onto the "Worker" section), Kestrel with two endpoints (gRPC over cleartext
// HTTP/2, and HTTP/1.1 for probes and Prometheus, which cannot speak h2c),
// gRPC services, health checks, OpenTelemetry and graceful drain. Program and
// the tests' InProcessWorker (tests/Platform.Testing) both build the host here,
// so tests run the real wiring.
using System.Net;
using Grpc.AspNetCore.HealthChecks;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Platform.Core.Protos;
using Platform.Core.Workers;

namespace Platform.Worker;

public static class WorkerHost
{
    /// <summary>
    /// Builds (does not start) the worker. <paramref name="configure"/> runs before the worker's own registrations:
    /// it may add configuration sources, logging providers or a TimeProvider (tests use fake time).
    /// </summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ApplicationName = typeof(WorkerHost).Assembly.GetName().Name });
        builder.Configuration.AddCommandLine(WorkerCommandLine.Normalize(args), WorkerCommandLine.SwitchMappings.ToDictionary());
        builder.Logging.ClearProviders();
        if (string.Equals(builder.Configuration["Worker:LogFormat"], "json", StringComparison.OrdinalIgnoreCase))
        {
            // One JSON object per line, for log collectors in a cluster.
            builder.Logging.AddJsonConsole(o =>
            {
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
            });
        }
        else
        {
            builder.Logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
                o.UseUtcTimestamp = true;
            });
        }
        // Every unhealthy probe result (each second while loading or draining) would be an error line;
        // the worker logs the transitions themselves (loading, loaded, faulted, draining).
        builder.Logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", LogLevel.Critical);
        configure?.Invoke(builder);

        var services = builder.Services;
        services.AddOptions<WorkerOptions>().BindConfiguration(WorkerOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<WorkerOptions>, WorkerOptionsValidator>();
        var options = builder.Configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();

        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<WorkerAnnouncer>();
        services.AddSingleton<Platform.KvCache.KvTierMetrics>();
        services.AddSingleton<WorkerEndpoints>();
        services.AddSingleton<KvPeers>();
        services.AddSingleton<EngineHost>();
        services.AddHostedService(sp => sp.GetRequiredService<EngineHost>());
        services.AddSingleton<DrainCoordinator>();
        services.AddHostedService(sp => sp.GetRequiredService<DrainCoordinator>());
        services.AddSingleton<WorkerMetrics>();
        services.AddSingleton<EngineWatchdog>();
        services.AddHostedService<HealthNudger>();
        // Stopping waits up to the drain grace period, then a margin for aborted streams and the server.
        services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);

        builder.WebHost.ConfigureKestrel((context, kestrel) =>
        {
            var o = context.Configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
            // One router connection multiplexes every request and KV event stream to this worker (default cap: 100).
            kestrel.Limits.Http2.MaxStreamsPerConnection = 1024;
            // Pings find a vanished router within ~50 s, so its streams are cancelled and their KV blocks freed.
            kestrel.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
            kestrel.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(20);
            var endpoints = kestrel.ApplicationServices.GetRequiredService<WorkerEndpoints>();
            // Kestrel's options are built with the app, before the validator runs at start; it reports an invalid
            // host or port then, and nothing binds. Until then use harmless stand-ins.
            var address = o.TryGetListenAddress(out var parsed) ? parsed : IPAddress.Loopback;
            static int Port(int port) => port is >= 0 and <= 65535 ? port : 0;
            kestrel.Listen(address, Port(o.Port), listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                endpoints.Grpc = listen;
            });
            kestrel.Listen(address, Port(o.HttpPort), listen =>
            {
                listen.Protocols = HttpProtocols.Http1;
                endpoints.Http = listen;
            });
            // A pod-IP host is also served on loopback, for kubectl port-forward (Core's ListenAddresses).
            foreach (var extra in Platform.Core.Networking.ListenAddresses.For(address).Skip(1))
            {
                kestrel.Listen(extra, Port(o.Port), listen => listen.Protocols = HttpProtocols.Http2);
                kestrel.Listen(extra, Port(o.HttpPort), listen => listen.Protocols = HttpProtocols.Http1);
            }
        });

        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = options.MaxMessageMegabytes * 1024 * 1024;
            o.MaxSendMessageSize = null;
        });
        services.AddGrpcHealthChecks(o =>
            {
                o.Services.Clear();
                o.Services.Map("", c => c.Tags.Contains(HealthTags.Ready));
                o.Services.Map(Inference.Descriptor.FullName, c => c.Tags.Contains(HealthTags.Ready));
                o.UseHealthChecksCache = false;
            })
            .AddCheck<EngineLivenessCheck>("engine-alive", tags: [HealthTags.Live])
            .AddCheck<EngineReadinessCheck>("engine-ready", tags: [HealthTags.Ready])
            .AddCheck<DrainReadinessCheck>("not-draining", tags: [HealthTags.Ready]);
        services.Configure<HealthCheckPublisherOptions>(o =>
        {
            o.Delay = TimeSpan.Zero;
            o.Period = TimeSpan.FromSeconds(Math.Max(1, options.HealthPublishSeconds));
        });

        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("platform-worker", serviceInstanceId: options.ResolvedWorkerId))
            .WithMetrics(m => m.AddMeter(WorkerTelemetry.MeterName, Platform.KvCache.KvTierMetrics.MeterName).AddRuntimeInstrumentation().AddAspNetCoreInstrumentation().AddPrometheusExporter())
            .WithTracing(t => t
                .AddSource(WorkerTelemetry.SourceName)
                .AddAspNetCoreInstrumentation(o => o.Filter = http => !IsProbe(http.Request.Path)));
        if (!string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) telemetry.UseOtlpExporter();

        var app = builder.Build();
        app.MapGrpcService<InferenceService>();
        app.MapGrpcService<KvPeerService>();
        app.MapGrpcHealthChecksService();
        app.MapHealthChecks("/healthz", new HealthCheckOptions { Predicate = r => r.Tags.Contains(HealthTags.Live) });
        app.MapHealthChecks("/readyz", new HealthCheckOptions { Predicate = r => r.Tags.Contains(HealthTags.Ready) });
        // vLLM's names (prometheus-net) and OpenTelemetry's text, merged into one exposition.
        app.MapPrometheusScrapingEndpoint("/metrics", meterProvider: null, configureBranchedPipeline: b => b.Use(VllmExposition.MergeAsync), optionsName: null);

        app.Lifetime.ApplicationStarted.Register(() =>
        {
            // Create the meter now (options are valid by then) so /metrics shows the engine gauges before the first request.
            app.Services.GetRequiredService<WorkerMetrics>();
            var endpoints = app.Services.GetRequiredService<WorkerEndpoints>();
            var announcer = app.Services.GetRequiredService<WorkerAnnouncer>();
            var o = app.Services.GetRequiredService<IOptions<WorkerOptions>>().Value;
            Log.Listening(app.Logger, o.ResolvedWorkerId, endpoints.GrpcAddress.ToString(), endpoints.HttpAddress.ToString());
            announcer.Announce($"{WorkerAnnouncements.Listening}{endpoints.GrpcAddress.GetLeftPart(UriPartial.Authority)}");
            announcer.Announce($"{WorkerAnnouncements.HttpListening}{endpoints.HttpAddress.GetLeftPart(UriPartial.Authority)}");
        });
        return app;
    }

    private static bool IsProbe(PathString path) =>
        path.StartsWithSegments("/metrics") || path.StartsWithSegments("/healthz") || path.StartsWithSegments("/readyz")
        || path.StartsWithSegments("/grpc.health.v1.Health");
}

/// <summary>The bound endpoints (Kestrel writes the real port into ListenOptions after binding port 0).</summary>
public sealed class WorkerEndpoints
{
    internal ListenOptions? Grpc { get; set; }
    internal ListenOptions? Http { get; set; }

    public Uri GrpcAddress => ToUri(Grpc);
    public Uri HttpAddress => ToUri(Http);

    private static Uri ToUri(ListenOptions? listen) =>
        listen?.IPEndPoint is { } ep ? new Uri($"http://{ep}") : throw new InvalidOperationException("the worker has not bound its endpoints yet.");
}
