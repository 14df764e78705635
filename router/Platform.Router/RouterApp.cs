// Composition of the router process: configuration (with the command-line
// switches of `platform-router`), options validation, services, telemetry and
// the HTTP pipeline. Program.cs only calls Build and Run, and tests host the
// same app on 127.0.0.1:0. An hf:// --model is downloaded (or found) in the hub
// cache before the tokenizer loads, without the weights (the router reads only
// the tokenizer and configs); --download-only does just that and exits.
using k8s;
using k8s.Exceptions;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Platform.Core.Models.Hub;
using Platform.Router.Api;
using Platform.Router.Configuration;
using Platform.Router.Discovery;
using Platform.Router.Forwarding;
using Platform.Router.Model;
using Platform.Router.Policies;
using Platform.Router.Telemetry;
using Platform.Router.Workers;

namespace Platform.Router;

/// <summary>Options failed validation; the message lists every problem and its fix.</summary>
public sealed class RouterConfigurationException(string message) : Exception(message);

public static class RouterApp
{
    public const string ListeningPrefix = "PLATFORM_ROUTER_LISTENING ";

    public static readonly IReadOnlyDictionary<string, string> Switches = new Dictionary<string, string>
    {
        ["--model"] = "Router:Model",
        ["--download-only"] = "Router:DownloadOnly",
        ["--workers"] = "Router:Workers",
        ["--port"] = "Router:Port",
        ["--host"] = "Router:Host",
        ["--policy"] = "Router:Placement:Policy",
        ["--api-key"] = "Router:ApiKeys",
        ["--served-model-name"] = "Router:ServedModelName",
        ["--chat-template"] = "Router:ChatTemplate",
        ["--migration-limit"] = "Router:MigrationLimit",
        ["--tool-call-parser"] = "Router:ToolCallParser",
        ["--enable-auto-tool-choice"] = "Router:EnableAutoToolChoice",
        ["--discovery"] = "Router:Discovery",
        ["--worker-service"] = "Router:Kubernetes:WorkerService",
        ["--namespace"] = "Router:Kubernetes:Namespace",
        ["--worker-port-name"] = "Router:Kubernetes:PortName",
        ["--kubeconfig"] = "Router:Kubernetes:Kubeconfig",
    };

    /// <param name="configure">Tests replace services here (e.g. a fake TimeProvider).</param>
    public static WebApplication Build(string[] args, Action<IServiceCollection>? configure = null)
    {
        args = Normalize(args);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args });
        builder.Configuration.AddCommandLine(args, Switches.ToDictionary(kv => kv.Key, kv => kv.Value));

        var options = builder.Configuration.GetSection(RouterOptions.Section).Get<RouterOptions>() ?? new RouterOptions();
        var errors = options.Validate();
        if (errors.Count > 0)
            throw new RouterConfigurationException("The router cannot start:\n  " + string.Join("\n  ", errors));

        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            foreach (var address in Platform.Core.Networking.ListenAddresses.For(System.Net.IPAddress.Parse(options.Host == "localhost" ? "127.0.0.1" : options.Host)))
                k.Listen(address, options.Port);
        });

        var services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => ServedModel.Load(ResolveModel(options.Model!, sp.GetRequiredService<ILoggerFactory>().CreateLogger("Platform.Router.Model")),
            sp.GetRequiredService<TimeProvider>(), options.ChatTemplate, HubModelSource.DefaultServedName(options.Model!)));
        services.AddSingleton<PrefixIndex>();
        services.AddSingleton(sp => new WorkerDirectory(options));
        services.AddSingleton(sp => sp.GetRequiredService<WorkerDirectory>().Pool);
        services.AddSingleton<IRandomSource>(new SystemRandomSource());
        services.AddSingleton(sp => PlacementPolicies.Create(options.Placement, sp.GetRequiredService<PrefixIndex>(), sp.GetRequiredService<IRandomSource>()));
        services.AddSingleton<RouterMetrics>();
        services.AddSingleton<GenerationForwarder>();
        services.AddSingleton<OpenAiEndpoints>();
        services.AddHostedService<WorkerMonitor>();
        if (options.UsesKubernetes) AddKubernetesDiscovery(services, options.Kubernetes);

        var otel = services.AddOpenTelemetry()
            .WithMetrics(m => m
                .AddMeter(RouterMetrics.MeterName)
                .AddAspNetCoreInstrumentation()
                .AddRuntimeInstrumentation()
                .AddPrometheusExporter())
            .WithTracing(t => t
                .AddSource(RouterMetrics.MeterName)
                .AddAspNetCoreInstrumentation(o => o.Filter = c => c.Request.Path.StartsWithSegments("/v1", StringComparison.Ordinal))
                .AddGrpcClientInstrumentation()
                .AddHttpClientInstrumentation());
        if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) otel.UseOtlpExporter();

        configure?.Invoke(services);

        var app = builder.Build();
        // Load the tokenizer now: a bad model directory fails the start, not the first request.
        app.Services.GetRequiredService<ServedModel>();
        app.UseMiddleware<ApiKeyMiddleware>(options.Keys());
        app.MapGet("/healthz", () => Results.Text("ok"));
        app.MapGet("/readyz", Readiness);
        app.MapPrometheusScrapingEndpoint("/metrics");
        OpenAiEndpoints.Map(app);
        OpenAiEndpoints.MapTokenizer(app);
        app.MapFallback((HttpContext c) => new ApiError(404, $"no route {c.Request.Method} {c.Request.Path}; see /v1/completions, /v1/chat/completions, /v1/models.").WriteAsync(c));
        return app;
    }

    /// <summary>A bare <c>--download-only</c> (last, or before another switch) as <c>--download-only true</c>, which the configuration provider reads.</summary>
    public static string[] Normalize(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var result = new List<string>(args.Length + 1);
        for (int i = 0; i < args.Length; i++)
        {
            result.Add(args[i]);
            if (args[i] is "--download-only" or "--enable-auto-tool-choice" && (i + 1 == args.Length || args[i + 1].StartsWith('-'))) result.Add("true");
        }
        return [.. result];
    }

    /// <summary>
    /// `--download-only`: null when the switch is not given (serve as usual); else 0 once the model is in the hub
    /// cache (or the directory has the tokenizer), 1 with the error when it cannot be had, 2 for invalid options.
    /// </summary>
    public static async Task<int?> DownloadOnlyAsync(string[] args, TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var config = new ConfigurationBuilder().AddCommandLine(Normalize(args), Switches.ToDictionary(kv => kv.Key, kv => kv.Value)).Build();
        var options = config.GetSection(RouterOptions.Section).Get<RouterOptions>() ?? new RouterOptions();
        if (!options.DownloadOnly) return null;
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            await log.WriteLineAsync("The router cannot start:\n  " + string.Join("\n  ", errors)).ConfigureAwait(false);
            return 2;
        }
        try
        {
            string directory = await HubModelSource.ResolveAsync(options.Model!, p => log.WriteLine(Progress(options.Model!, p)), withoutWeights: true).ConfigureAwait(false);
            await log.WriteLineAsync($"platform-router: {options.Model} is at {directory}").ConfigureAwait(false);
            return 0;
        }
        catch (HubDownloadException e)
        {
            await log.WriteLineAsync($"platform-router: {e.Message}").ConfigureAwait(false);
            return 1;
        }
    }

    private static string Progress(string model, HubDownloadProgress p) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"platform-router: downloading {model}: {(p.TotalBytes <= 0 ? 100 : p.Bytes * 100 / p.TotalBytes)}% ({p.Bytes} of {p.TotalBytes} bytes), file {p.File}");

    /// <summary>The model directory: an hf:// source downloaded (or found) in the hub cache, progress in the log; a failure stops the start.</summary>
    private static string ResolveModel(string source, ILogger logger)
    {
        if (!HubModelReference.IsHubSource(source)) return source;
        try
        {
            string directory = HubModelSource.ResolveAsync(source, p => RouterLog.HubDownloadProgress(logger, Progress(source, p)), withoutWeights: true).GetAwaiter().GetResult();
            RouterLog.HubDownloaded(logger, source, directory);
            return directory;
        }
        catch (HubDownloadException e)
        {
            throw new RouterConfigurationException($"The router cannot start:\n  Router:Model: {e.Message}");
        }
    }

    /// <summary>
    /// Ready means serving: 200 once at least one worker is in the pool, else 503. The body says how many
    /// are, of how many discovery knows, so a supervisor (`platform up`) can wait for all of them:
    /// {"ready":true,"workers_in_pool":2,"workers_known":2}.
    /// </summary>
    private static IResult Readiness(WorkerPool pool, WorkerDirectory workers)
    {
        int inPool = pool.Current.Available.Count;
        return Results.Json(new ReadinessReport(inPool > 0, inPool, workers.Connections.Count), ReadinessJson.Default.ReadinessReport,
            statusCode: inPool > 0 ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>In-cluster service-account configuration, or the given kubeconfig; the namespace
    /// defaults to the kubeconfig context's or the pod's own.</summary>
    private static void AddKubernetesDiscovery(IServiceCollection services, KubernetesDiscoveryOptions options)
    {
        KubernetesClientConfiguration config;
        try
        {
            config = string.IsNullOrEmpty(options.Kubeconfig)
                ? KubernetesClientConfiguration.InClusterConfig()
                : KubernetesClientConfiguration.BuildConfigFromConfigFile(options.Kubeconfig);
        }
        catch (KubeConfigException e)
        {
            throw new RouterConfigurationException($"The router cannot start:\n  Router:Kubernetes: cannot load the Kubernetes configuration ({e.Message}); check --kubeconfig, or run in a pod with a service-account token.");
        }
        string? ns = string.IsNullOrEmpty(options.Namespace) ? config.Namespace : options.Namespace;
        if (string.IsNullOrEmpty(ns))
            throw new RouterConfigurationException("The router cannot start:\n  Router:Kubernetes:Namespace is not set and the configuration names none; pass --namespace NAME (the workers' namespace).");
        services.AddSingleton<IKubernetes>(_ => new Kubernetes(config));
        services.AddSingleton(sp => new EndpointSliceWatcher(sp.GetRequiredService<IKubernetes>(), sp.GetRequiredService<WorkerDirectory>(), ns, options,
            sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<EndpointSliceWatcher>>()));
        services.AddHostedService(sp => sp.GetRequiredService<EndpointSliceWatcher>());
    }
}

/// <summary>The body of GET /readyz.</summary>
public sealed record ReadinessReport(
    [property: System.Text.Json.Serialization.JsonPropertyName("ready")] bool Ready,
    [property: System.Text.Json.Serialization.JsonPropertyName("workers_in_pool")] int WorkersInPool,
    [property: System.Text.Json.Serialization.JsonPropertyName("workers_known")] int WorkersKnown);

[System.Text.Json.Serialization.JsonSerializable(typeof(ReadinessReport))]
internal sealed partial class ReadinessJson : System.Text.Json.Serialization.JsonSerializerContext;

internal static partial class RouterLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "{Progress}")]
    public static partial void HubDownloadProgress(ILogger logger, string progress);

    [LoggerMessage(Level = LogLevel.Information, Message = "Model {Model} is in the hub cache at {Snapshot}")]
    public static partial void HubDownloaded(ILogger logger, string model, string snapshot);
}
