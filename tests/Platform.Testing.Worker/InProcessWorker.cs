// Hosts a complete worker (WorkerHost.Build, the executable's own wiring, with
// the real Inference service over the real engine) inside the calling process
// on 127.0.0.1 with free ports, for tests and the bench: StartAsync returns once
// the server listens and the model is loaded. Faults switches on injected
// failures in front of the real service (WorkerFaults).
using Grpc.AspNetCore.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Platform.Core.Workers;
using Platform.Engine;
using Platform.Worker;

namespace Platform.Testing;

public sealed class InProcessWorker : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Lock _stopLock = new();
    private Task? _stopping;

    private InProcessWorker(WebApplication app, WorkerFaults faults)
    {
        _app = app;
        Faults = faults;
    }

    public IServiceProvider Services => _app.Services;
    /// <summary>gRPC endpoint (HTTP/2 cleartext).</summary>
    public Uri GrpcAddress => Services.GetRequiredService<WorkerEndpoints>().GrpcAddress;
    /// <summary>The gRPC endpoint as a router's --workers entry and worker id: http://127.0.0.1:PORT.</summary>
    public string Address => GrpcAddress.GetLeftPart(UriPartial.Authority);
    /// <summary>The gRPC port.</summary>
    public int Port => GrpcAddress.Port;
    /// <summary>HTTP/1.1 endpoint for /healthz, /readyz and /metrics.</summary>
    public Uri HttpAddress => Services.GetRequiredService<WorkerEndpoints>().HttpAddress;
    public LlmEngine Engine => Services.GetRequiredService<EngineHost>().Engine
        ?? throw new InvalidOperationException("the engine is not loaded.");
    /// <summary>Failures injected in front of the Inference service, and what it was asked.</summary>
    public WorkerFaults Faults { get; }

    /// <summary>
    /// Starts a worker for <paramref name="modelDirectory"/>. <paramref name="args"/> are platform-worker
    /// switches (e.g. "--kv-blocks", "64"); they override the defaults here (127.0.0.1, ports 0, no stdout lines).
    /// </summary>
    public static async Task<InProcessWorker> StartAsync(string modelDirectory, IEnumerable<string>? args = null,
        Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        string[] all = [.. new WorkerArguments { Model = modelDirectory, Host = "127.0.0.1", Port = 0, HttpPort = 0, Announce = false }.ToArgs(), .. args ?? []];
        var faults = new WorkerFaults();
        var app = WorkerHost.Build(all, builder =>
        {
            builder.Services.AddSingleton(faults);
            builder.Services.AddGrpc(o => o.Interceptors.Add<FaultInterceptor>());
            configure?.Invoke(builder);
        });
        try
        {
            await app.StartAsync(cancellationToken);
            await app.Services.GetRequiredService<EngineHost>().Ready.WaitAsync(cancellationToken);
            return new InProcessWorker(app, faults);
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
