// A fake worker for router tests that need a worker to behave in ways the real
// engine will not on cue: report prefill progress for five (virtual) minutes,
// go silent mid-prefill, then stream tokens. It is a real gRPC server on
// 127.0.0.1:0 speaking inference.proto, so the router's real client, pool,
// health checks and KV event subscription all run; only Generate is scripted.
// The script's delays run on the test's TimeProvider (a FakeTimeProvider that
// VirtualClock advances), the same clock the router under test uses.
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Platform.Core.Protos;

namespace Platform.Router.Tests;

/// <summary>Generate's script: the request, the stream to write, the call's cancellation and the worker's call number (1-based).</summary>
internal delegate Task GenerateScript(GenerateRequest request, IServerStreamWriter<GenerateChunk> stream, int call, CancellationToken cancellationToken);

internal sealed class ScriptedWorker : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Service _service;

    private ScriptedWorker(WebApplication app, Service service, string address)
    {
        _app = app;
        _service = service;
        Address = address;
    }

    public string Address { get; }

    /// <summary>Generate calls received.</summary>
    public int GenerateCalls => Volatile.Read(ref _service.Calls);

    /// <summary>Generate calls whose cancellation (the router hung up) the script observed.</summary>
    public int Cancelled => Volatile.Read(ref _service.CancelledCalls);

    /// <summary>The identity the router checks: a tiny model's, block size 16, context 1M tokens.</summary>
    public static WorkerInfo Identity(string id) => new()
    {
        WorkerId = id,
        ServedModelName = "tiny",
        ModelFingerprint = "scripted",
        BlockSize = 16,
        BlockHashSeed = 7,
        MaxContextTokens = 1 << 20,
        VocabSize = 512,
    };

    public static async Task<ScriptedWorker> StartAsync(GenerateScript script)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc();
        var service = new Service(script);
        builder.Services.AddSingleton(service);
        var app = builder.Build();
        app.MapGrpcService<Service>();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new ScriptedWorker(app, service, address);
    }

    public async ValueTask DisposeAsync()
    {
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5))) await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
    }

    /// <summary>A progress chunk: <paramref name="computed"/> of <paramref name="total"/> prompt tokens prefilled.</summary>
    public static GenerateChunk Progress(int computed, int total, bool queued = false) =>
        new() { Progress = new PrefillProgress { ComputedTokens = computed, PromptTokens = total, Queued = queued } };

    /// <summary>Streams <paramref name="count"/> tokens (text "t0 t1 …"), the last with finish reason length.</summary>
    public static async Task TokensAsync(GenerateRequest request, IServerStreamWriter<GenerateChunk> stream, int count)
    {
        for (int i = 0; i < count; i++)
        {
            await stream.WriteAsync(new GenerateChunk
            {
                TokenIds = { i + 1 },
                Text = $"t{i} ",
                PromptTokens = request.PromptTokenIds.Count,
                CompletionTokens = i + 1,
                FinishReason = i == count - 1 ? FinishReason.Length : FinishReason.Unspecified,
            });
        }
    }

    private sealed class Service(GenerateScript script) : Inference.InferenceBase
    {
        public int Calls;
        public int CancelledCalls;

        public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateChunk> responseStream, ServerCallContext context)
        {
            int call = Interlocked.Increment(ref Calls);
            try
            {
                await script(request, responseStream, call, context.CancellationToken);
            }
            catch (Exception) when (context.CancellationToken.IsCancellationRequested)
            {
                Interlocked.Increment(ref CancelledCalls);
            }
        }

        public override Task<LoadReport> GetLoad(LoadRequest request, ServerCallContext context) =>
            Task.FromResult(new LoadReport { Healthy = true, KvBlocksTotal = 1024, KvBlocksFree = 1024 });

        public override Task<WorkerInfo> GetInfo(InfoRequest request, ServerCallContext context) =>
            Task.FromResult(Identity(context.Host));

        public override async Task SubscribeKvEvents(SubscribeKvEventsRequest request, IServerStreamWriter<KvEventBatch> responseStream, ServerCallContext context)
        {
            await responseStream.WriteAsync(new KvEventBatch { IsSnapshot = true, SnapshotSequence = 0, WorkerId = context.Host });
            try
            {
                await Task.Delay(Timeout.Infinite, context.CancellationToken);
            }
            catch (OperationCanceledException)
            {
                // The router unsubscribed.
            }
        }
    }
}

/// <summary>
/// A FakeTimeProvider that runs ahead of real time: a background loop advances it by a step every
/// real millisecond or two, so minutes of virtual time pass in seconds and every timer (the router's
/// inactivity bound, keep-alive interval, retry backoff, health polls, and the scripts' delays) fires
/// in order on the one clock.
/// </summary>
internal sealed class VirtualClock : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;

    public VirtualClock(TimeSpan step)
    {
        Time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        _pump = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                Time.Advance(step);
                await Task.Delay(1);
            }
        });
    }

    public Microsoft.Extensions.Time.Testing.FakeTimeProvider Time { get; }

    public TimeSpan Elapsed => Time.GetUtcNow() - DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump;
        _stop.Dispose();
    }
}
