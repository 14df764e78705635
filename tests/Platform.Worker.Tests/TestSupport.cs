// Shared helpers: one tiny random model per test run, a worker on 127.0.0.1:0
// with a gRPC client, and polling with a deadline.
using Grpc.Core;
using Grpc.Net.Client;
using Platform.Core.Models;
using Platform.Core.Protos;

namespace Platform.Worker.Tests;

internal static class TestModel
{
    /// <summary>This run's scratch folder, removed when the test process exits.</summary>
    public static readonly string Root = Path.Combine(Path.GetTempPath(), $"platform-worker-tests-{Environment.ProcessId}");

    static TestModel()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        };
    }

    private static readonly Lazy<string> Tiny = new(() =>
    {
        string dir = Path.Combine(Root, "tiny");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        RandomModelGenerator.Create(dir, new RandomModelOptions { Preset = "tiny", Seed = 7 });
        return dir;
    });

    /// <summary>A tiny llama (vocab 512, context 4096) with tokenizer, created once per test run.</summary>
    public static string Dir => Tiny.Value;

    private static readonly Lazy<string> TinySlidingMistral = new(() =>
    {
        string dir = Path.Combine(Root, "tiny-mistral-sliding");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        RandomModelGenerator.Create(dir, new RandomModelOptions { Preset = "tiny", Seed = 7, ModelType = "mistral", SlidingWindow = SlidingWindow });
        return dir;
    });

    /// <summary>The sliding window of <see cref="SlidingDir"/>: not a multiple of the 16-token blocks.</summary>
    public const int SlidingWindow = 37;

    /// <summary>A tiny mistral whose every layer attends over the last <see cref="SlidingWindow"/> positions only.</summary>
    public static string SlidingDir => TinySlidingMistral.Value;

    /// <summary>Deterministic prompts over token ids 0..499 (the tiny vocabulary is 512).</summary>
    public static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(0, 500)).ToArray();
    }
}

/// <summary>An in-process worker plus a gRPC channel to it.</summary>
internal sealed class WorkerUnderTest : IAsyncDisposable
{
    public static readonly string[] SmallEngine = ["--kv-blocks", "64", "--threads", "1", "--seed", "1"];

    private WorkerUnderTest(InProcessWorker worker)
    {
        Worker = worker;
        Channel = GrpcChannel.ForAddress(worker.GrpcAddress);
        Client = new Inference.InferenceClient(Channel);
    }

    public InProcessWorker Worker { get; }
    public GrpcChannel Channel { get; }
    public Inference.InferenceClient Client { get; }

    public static async Task<WorkerUnderTest> StartAsync(params string[] args)
    {
        var worker = await InProcessWorker.StartAsync(TestModel.Dir, [.. SmallEngine, .. args]);
        return new WorkerUnderTest(worker);
    }

    public static GenerateRequest Request(int[] prompt, int maxTokens, string? id = null) => new()
    {
        RequestId = id ?? Guid.NewGuid().ToString("n"),
        PromptTokenIds = { prompt },
        Sampling = new SamplingOptions { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true },
    };

    public async Task<List<GenerateChunk>> GenerateAllAsync(GenerateRequest request, CancellationToken cancellationToken = default)
    {
        using var call = Client.Generate(request, cancellationToken: cancellationToken);
        var chunks = new List<GenerateChunk>();
        await foreach (var chunk in call.ResponseStream.ReadAllAsync(cancellationToken)) chunks.Add(chunk);
        return chunks;
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await Worker.DisposeAsync();
    }
}

internal static class Poll
{
    /// <summary>Polls <paramref name="condition"/> every 10 ms; fails the test with <paramref name="what"/> after the timeout.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"not reached within {timeout.TotalSeconds} s: {what}");
            await Task.Delay(10);
        }
    }
}
