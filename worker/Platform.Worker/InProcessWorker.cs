// Hosts a complete worker (same wiring as the executable) inside the calling
// process on 127.0.0.1 with free ports, for tests: StartAsync returns once the
// server listens and the model is loaded.
using Platform.Core.Workers;

namespace Platform.Worker;

public sealed class InProcessWorker : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly object _stopLock = new();
    private Task? _stopping;

    private InProcessWorker(WebApplication app)
    {
        _app = app;
    }

    public IServiceProvider Services => _app.Services;
    /// <summary>gRPC endpoint (HTTP/2 cleartext).</summary>
    public Uri GrpcAddress => Services.GetRequiredService<WorkerEndpoints>().GrpcAddress;
    /// <summary>HTTP/1.1 endpoint for /healthz, /readyz and /metrics.</summary>
    public Uri HttpAddress => Services.GetRequiredService<WorkerEndpoints>().HttpAddress;
    public Engine.LlmEngine Engine => Services.GetRequiredService<EngineHost>().Engine
        ?? throw new InvalidOperationException("the engine is not loaded.");

    /// <summary>
    /// Starts a worker for <paramref name="modelDirectory"/>. <paramref name="args"/> are platform-worker
    /// switches (e.g. "--kv-blocks", "64"); they override the defaults here (127.0.0.1, ports 0, no stdout lines).
    /// </summary>
    public static async Task<InProcessWorker> StartAsync(string modelDirectory, IEnumerable<string>? args = null,
        Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        string[] all = [.. new WorkerArguments { Model = modelDirectory, Host = "127.0.0.1", Port = 0, HttpPort = 0, Announce = false }.ToArgs(), .. args ?? []];
        var app = WorkerHost.Build(all, configure);
        try
        {
            await app.StartAsync(cancellationToken);
            await app.Services.GetRequiredService<EngineHost>().Ready.WaitAsync(cancellationToken);
            return new InProcessWorker(app);
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }
    }

    /// <summary>Stops as on SIGTERM: drain (readiness false, new work refused, in-flight streams finish), then shut down.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default)
    {
        lock (_stopLock) return _stopping ??= _app.StopAsync(cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _app.DisposeAsync();
    }
}
