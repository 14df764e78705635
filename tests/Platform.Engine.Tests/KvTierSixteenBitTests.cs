// bfloat16 and float16 compute with the KV tier on, the way the shipped sample
// runs (remote mode against a real redis-server), held to a float32 engine of
// the same model: a prefix one engine computed and another fetched from Redis,
// and a migrated sequence (its prompt and already generated tokens handed to a
// fresh engine, whose blocks, the generated ones included, come from Redis).
// Tolerances against float32, on the greedy steps up to the first token the two
// runs chose differently (after a near-tie flips a token the contexts differ):
// those of the 16-bit compute itself (NumericsTests: bfloat16 0.1, float16
// 0.02). On this tiny random Qwen2/YaRN model over 200+ tokens bfloat16 compute
// alone is 0.07 from float32 (the issue's ~0.05 is a real checkpoint's figure);
// the tier adds nothing: a fetched prefix is held to the computed run at 1e-5.
using System.Diagnostics.Metrics;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class KvTierSixteenBitTests(ITestOutputHelper output)
{
    private sealed record RunResult(List<int> Tokens, List<float[]> Logits, GenerationChunk Last);

    private static async Task<RunResult> Run(LlmEngine engine, IReadOnlyList<int> prompt, int maxTokens, IReadOnlyList<int>? generated = null)
    {
        var tokens = new List<int>();
        var logits = new List<float[]>();
        GenerationChunk? last = null;
        var request = new GenerationRequest(prompt, new SamplingParams { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true }, ReturnLogits: true, GeneratedTokens: generated);
        await foreach (var chunk in engine.GenerateAsync(request))
        {
            if (chunk.Progress is not null) continue;
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
            last = chunk;
        }
        return new RunResult(tokens, logits, last!);
    }

    /// <summary>A tiny Qwen2 (q/k/v biases) with YaRN RoPE scaling, float32 checkpoint: the kind of model.</summary>
    private static readonly string QwenYarn = TestModels.Get(TestModels.Tiny("qwen2", NumericsTests.Rope("yarn")));

    private static LlmEngine Engine(string dtype) =>
        TestModels.Engine(QwenYarn, new EngineOptions { NumKvBlocks = 64, Threads = 2, DefaultSeed = 1, ComputeDtype = dtype });

    private static KvTierOptions Remote(RedisServerProcess redis, string prefix) => new()
    {
        Mode = "remote",
        HostMemory = "64MB",
        Remote = new RemoteTierOptions { Address = redis.Address, KeyPrefix = prefix, OperationTimeoutMs = 2000 },
    };

    /// <summary>Worst logit difference over the steps both runs reached with the same tokens before them.</summary>
    private double AssertClose(RunResult expected, RunResult actual, double tolerance, string what)
    {
        int steps = 0;
        double worst = 0;
        for (int i = 0; i < Math.Min(expected.Logits.Count, actual.Logits.Count); i++)
        {
            for (int j = 0; j < expected.Logits[i].Length; j++)
                worst = Math.Max(worst, Math.Abs(expected.Logits[i][j] - actual.Logits[i][j]));
            steps++;
            if (expected.Tokens[i] != actual.Tokens[i]) break;
        }
        output.WriteLine($"{what}: worst logit difference {worst:E2} over {steps} of {expected.Logits.Count} steps (tolerance {tolerance})");
        Assert.True(steps > 0);
        Assert.True(worst <= tolerance, $"{what}: logits differ by up to {worst} (tolerance {tolerance})");
        return worst;
    }

    [Theory]
    [InlineData("bfloat16", NumericsTests.BFloat16Tolerance)]
    [InlineData("float16", NumericsTests.Float16Tolerance)]
    public async Task A_prefix_fetched_from_redis_by_a_16_bit_engine_stays_close_to_float32(string dtype, double tolerance)
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var prompt = KvTierRuns.Prompt(200, 7);
        using var fp32 = Engine("float32");
        var reference = await Run(fp32, prompt, 8);

        using var first = Engine(dtype);
        await first.EnableKvTierAsync(Remote(redis, $"{dtype}-prefix:"));
        var computed = await Run(first, prompt, 8);
        Assert.Equal(0, computed.Last.CachedTokens);
        AssertClose(reference, computed, tolerance, $"{dtype} computed vs float32");
        await first.KvTiers!.FlushAsync();

        using var second = Engine(dtype);
        await second.EnableKvTierAsync(Remote(redis, $"{dtype}-prefix:"));
        var fetched = await Run(second, prompt, 8);
        Assert.Equal(new CachedTokenSplit(0, 0, 192), fetched.Last.CachedByTier);
        Assert.Equal(computed.Tokens, fetched.Tokens);
        AssertClose(reference, fetched, tolerance, $"{dtype} fetched from redis vs float32");
        // The tier itself adds nothing: fetched blocks hold the computed bytes.
        AssertClose(computed, fetched, 1e-5, $"{dtype} fetched vs computed {dtype}");
    }

    [Theory]
    [InlineData("bfloat16", NumericsTests.BFloat16Tolerance)]
    [InlineData("float16", NumericsTests.Float16Tolerance)]
    public async Task A_migrated_16_bit_sequence_takes_its_generated_blocks_from_redis_and_stays_close_to_float32(string dtype, double tolerance)
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var prompt = KvTierRuns.Prompt(200, 9);
        const int cut = 20;

        // The worker that dies: it computed the prompt and 20 outputs, written through to Redis.
        using var dying = Engine(dtype);
        await dying.EnableKvTierAsync(Remote(redis, $"{dtype}-migrate:"));
        var undisturbed = await Run(dying, prompt, 28);
        await dying.KvTiers!.FlushAsync();
        var generated = undisturbed.Tokens.Take(cut).ToList();

        // The worker it migrates to: 219 usable tokens = 13 full blocks, the 13th partly generated tokens.
        // Cached prompt tokens are reported up to the prompt's length (200); the block hits count the 13th.
        using var target = Engine(dtype);
        using var metrics = new KvTierMetrics();
        long remoteHitBlocks = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter == metrics.Meter && i.Name == "kv_tier_hit_blocks") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var t in tags) if (t.Key == "tier" && (string?)t.Value == "remote") Interlocked.Add(ref remoteHitBlocks, value);
        });
        listener.Start();
        await target.EnableKvTierAsync(Remote(redis, $"{dtype}-migrate:"), metrics);
        var continued = await Run(target, prompt, 28, generated);
        Assert.Equal(new CachedTokenSplit(0, 0, 200), continued.Last.CachedByTier);
        Assert.Equal(13, Interlocked.Read(ref remoteHitBlocks));
        Assert.Equal(undisturbed.Tokens.Count - cut, continued.Tokens.Count);

        // Float32 continued from the same tokens: the same context at every compared step.
        using var fp32 = Engine("float32");
        var reference = await Run(fp32, prompt, 28, generated);
        AssertClose(reference, continued, tolerance, $"{dtype} migrated at output {cut} vs float32");

        // And the continuation of the 16-bit sequence itself: its own undisturbed logits, same tolerance.
        var tail = new RunResult([.. undisturbed.Tokens.Skip(cut)], [.. undisturbed.Logits.Skip(cut)], undisturbed.Last);
        AssertClose(tail, continued, tolerance, $"{dtype} migrated vs undisturbed {dtype}");
    }
}
