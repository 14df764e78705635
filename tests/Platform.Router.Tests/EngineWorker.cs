// An in-process stand-in for the worker process: Kestrel on 127.0.0.1 serving
// the Inference gRPC contract over the REAL engine (a tiny random model), plus
// fault injection and call counting for the router's tests. The router only
// sees the gRPC contract, exactly as with the real worker.
using System.Net;
using System.Threading.Channels;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Platform.Core.Protos;
using Platform.Engine;
using Platform.Engine.Scheduling;
using CoreKv = Platform.Core.KvEvents;

namespace Platform.Router.Tests;

/// <summary>Faults a test can switch on while the worker runs.</summary>
internal sealed class FaultPlan
{
    private int _generateCalls;

    public int GenerateCalls => Volatile.Read(ref _generateCalls);
    public int CountCall() => Interlocked.Increment(ref _generateCalls);

    /// <summary>Fail Generate with this status before sending anything.</summary>
    public StatusCode? FailBeforeFirstToken { get; set; }

    /// <summary>Fail Generate with Internal after this many chunks.</summary>
    public int? FailAfterChunks { get; set; }

    /// <summary>Stop sending (but keep the call open) after this many chunks: a frozen worker.</summary>
    public int? StallAfterChunks { get; set; }

    /// <summary>The W3C traceparent header of the last Generate call.</summary>
    public string? LastTraceParent { get; set; }

    /// <summary>Report unhealthy in GetLoad.</summary>
    public bool Unhealthy { get; set; }
}

internal sealed class EngineWorker : IAsyncDisposable
{
    private readonly WebApplication _app;

    private EngineWorker(WebApplication app, LlmEngine engine, FaultPlan faults, int port)
    {
        _app = app;
        Engine = engine;
        Faults = faults;
        Port = port;
    }

    public LlmEngine Engine { get; }
    public FaultPlan Faults { get; }
    public int Port { get; }
    public string Address => $"http://127.0.0.1:{Port}";

    public static async Task<EngineWorker> StartAsync(string modelDir, int port = 0, int kvBlocks = 256, string servedName = "tiny")
    {
        var engine = LlmEngine.Load(modelDir, new EngineOptions { NumKvBlocks = kvBlocks, Threads = 1, DefaultSeed = 1, MaxContextTokens = 1024 });
        var faults = new FaultPlan();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = 64 << 20;
            o.EnableDetailedErrors = true;
        });
        builder.Services.AddSingleton(engine);
        builder.Services.AddSingleton(faults);
        builder.Services.AddSingleton(new WorkerIdentity(Guid.NewGuid().ToString("n"), servedName));
        var app = builder.Build();
        app.MapGrpcService<EngineInferenceService>();
        await app.StartAsync();
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new EngineWorker(app, engine, faults, new Uri(bound).Port);
    }

    public async ValueTask DisposeAsync()
    {
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2))) await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
        Engine.Dispose();
    }
}

internal sealed record WorkerIdentity(string Id, string ServedName);

internal sealed class EngineInferenceService(LlmEngine engine, FaultPlan faults, WorkerIdentity identity) : Inference.InferenceBase
{
    public override Task<WorkerInfo> GetInfo(InfoRequest request, ServerCallContext context) => Task.FromResult(new WorkerInfo
    {
        WorkerId = identity.Id,
        ServedModelName = identity.ServedName,
        ModelFingerprint = engine.Fingerprint.Id,
        BlockSize = engine.Hasher.BlockSize,
        BlockHashSeed = engine.Hasher.Seed,
        MaxContextTokens = engine.MaxContextTokens,
        VocabSize = engine.Config.VocabSize,
    });

    public override Task<LoadReport> GetLoad(LoadRequest request, ServerCallContext context)
    {
        var s = engine.GetStats();
        return Task.FromResult(new LoadReport
        {
            Running = s.Running,
            Waiting = s.Waiting,
            QueuedPrefillTokens = s.QueuedPrefillTokens,
            KvBlocksUsed = s.KvBlocksUsed,
            KvBlocksFree = s.KvBlocksFree,
            KvBlocksTotal = s.KvBlocksTotal,
            Healthy = engine.Healthy && !faults.Unhealthy,
        });
    }

    public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateChunk> responseStream, ServerCallContext context)
    {
        faults.CountCall();
        faults.LastTraceParent = context.RequestHeaders.GetValue("traceparent");
        if (faults.FailBeforeFirstToken is { } status) throw new RpcException(new Status(status, "injected failure"));
        var sampling = new SamplingParams
        {
            MaxTokens = request.Sampling.MaxTokens,
            Temperature = request.Sampling.Temperature,
            TopK = request.Sampling.TopK,
            TopP = request.Sampling.TopP == 0 ? 1 : request.Sampling.TopP,
            Seed = request.Sampling.HasSeed ? request.Sampling.Seed : null,
            StopStrings = [.. request.Sampling.Stop],
            StopTokenIds = [.. request.Sampling.StopTokenIds],
            IgnoreEos = request.Sampling.IgnoreEos,
        };
        IAsyncEnumerable<GenerationChunk> chunks;
        try
        {
            chunks = engine.GenerateAsync(new GenerationRequest([.. request.PromptTokenIds], sampling, request.RequestId), context.CancellationToken);
        }
        catch (EngineRequestException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        int sent = 0;
        await foreach (var c in chunks)
        {
            if (faults.FailAfterChunks is int n && sent >= n) throw new RpcException(new Status(StatusCode.Internal, "injected mid-stream failure"));
            if (faults.StallAfterChunks is int stall && sent >= stall) await Task.Delay(Timeout.Infinite, context.CancellationToken);
            var chunk = new GenerateChunk
            {
                Text = c.Text,
                PromptTokens = c.PromptTokens,
                CompletionTokens = c.CompletionTokens,
                Cached = new CachedTokens { Device = c.CachedTokens },
                FinishReason = c.Finish switch
                {
                    null => Platform.Core.Protos.FinishReason.Unspecified,
                    Platform.Engine.Scheduling.FinishReason.Stop => Platform.Core.Protos.FinishReason.Stop,
                    Platform.Engine.Scheduling.FinishReason.Length => Platform.Core.Protos.FinishReason.Length,
                    Platform.Engine.Scheduling.FinishReason.Abort => Platform.Core.Protos.FinishReason.Abort,
                    _ => Platform.Core.Protos.FinishReason.Error,
                },
                Error = c.Error ?? "",
            };
            chunk.TokenIds.AddRange(c.TokenIds);
            await responseStream.WriteAsync(chunk);
            sent++;
        }
    }

    public override async Task SubscribeKvEvents(SubscribeKvEventsRequest request, IServerStreamWriter<KvEventBatch> responseStream, ServerCallContext context)
    {
        var channel = Channel.CreateUnbounded<IReadOnlyList<CoreKv.KvEvent>>();
        using var subscription = await engine.SubscribeKvEventsAsync(events => channel.Writer.TryWrite([.. events]));
        var snapshot = new KvEventBatch { IsSnapshot = true, SnapshotSequence = subscription.SnapshotSequence, WorkerId = identity.Id };
        snapshot.Snapshot.AddRange(subscription.CachedBlocks.Select(b => new BlockRef { BlockHash = b.Hash, ParentHash = b.Parent, Tier = KvTier.Device }));
        await responseStream.WriteAsync(snapshot);
        await foreach (var events in channel.Reader.ReadAllAsync(context.CancellationToken))
        {
            var batch = new KvEventBatch { WorkerId = identity.Id };
            batch.Events.AddRange(events.Select(e => new KvEvent
            {
                Sequence = e.Sequence,
                Kind = e.Kind switch
                {
                    CoreKv.KvEventKind.BlockStored => KvEventKind.Stored,
                    CoreKv.KvEventKind.BlockRemoved => KvEventKind.Removed,
                    _ => KvEventKind.Cleared,
                },
                BlockHash = e.BlockHash,
                ParentHash = e.ParentHash,
                Tier = (KvTier)(int)e.Tier,
            }));
            await responseStream.WriteAsync(batch);
        }
    }
}
