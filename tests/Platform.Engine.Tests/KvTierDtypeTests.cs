// The KV tier with bfloat16 and float16 compute: blocks are stored in the
// compute dtype (no conversion), a prefix evicted from the device and loaded
// back from host memory, or fetched from a real redis-server by another engine,
// gives the same tokens and logits as recomputing it, with the cached tokens
// reported by tier. Loaded blocks are bit-identical to the computed ones, so
// the logits are held to 1e-5 as in float32 (measured: equal), far tighter
// than the 16-bit compute tolerances of NumericsTests. A
// bfloat16 engine's blocks are never read by a float32 engine of the same
// model: their keys differ, and planted under the float32 keys they are
// rejected as DtypeMismatch and recomputed.
using System.Diagnostics.Metrics;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class KvTierDtypeTests(ITestOutputHelper output)
{
    private static List<int> Prompt(int length, int seed) => KvTierRuns.Prompt(length, seed);

    private static Task<(List<int> Tokens, List<float[]> Logits, GenerationChunk Last)> Run(LlmEngine engine, IReadOnlyList<int> prompt) => KvTierRuns.Run(engine, prompt);

    private double AssertLogitsClose(List<float[]> expected, List<float[]> actual, double tolerance, string what)
    {
        Assert.Equal(expected.Count, actual.Count);
        double worst = 0;
        for (int i = 0; i < expected.Count; i++)
            for (int j = 0; j < expected[i].Length; j++)
                worst = Math.Max(worst, Math.Abs(expected[i][j] - actual[i][j]));
        output.WriteLine($"{what}: worst logit difference {worst:E2} (tolerance {tolerance})");
        Assert.True(worst <= tolerance, $"{what}: logits differ by up to {worst} (tolerance {tolerance})");
        return worst;
    }

    /// <summary>A loaded block holds the very bytes that were computed: the same as float32's tier tests.</summary>
    private const double TierTolerance = 1e-5;

    private static LlmEngine Engine(string dtype, int blocks = 64) =>
        TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = blocks, Threads = 2, DefaultSeed = 1, ComputeDtype = dtype });

    private static KvTierOptions Remote(RedisServerProcess redis, string prefix) => new()
    {
        Mode = "remote",
        HostMemory = "64MB",
        Remote = new RemoteTierOptions { Address = redis.Address, KeyPrefix = prefix, OperationTimeoutMs = 2000 },
    };

    [Theory]
    [InlineData("bfloat16")]
    [InlineData("float16")]
    public async Task Blocks_evicted_from_the_device_come_back_from_host_memory_in_the_compute_dtype(string dtype)
    {
        using var engine = Engine(dtype, blocks: 20);
        await engine.EnableKvTierAsync(new KvTierOptions { Mode = "host", HostMemory = "16MB" });
        // Stored in the compute dtype: 2 bytes per element, half a float32 block.
        var layout = engine.KvTiers!.Layout;
        Assert.Equal(KvBlockLayout.ParseDtype(dtype), layout.RawDtype);
        Assert.Equal(layout.RawDtype, layout.StoreDtype);
        Assert.Equal(2L * layout.NumLayers * layout.ElementsPerTensor * 2, layout.RawBytes);

        var p = Prompt(200, 2);
        var cold = await Run(engine, p);
        Assert.Equal(0, cold.Last.CachedTokens);
        await engine.KvTiers.FlushAsync();
        await Run(engine, Prompt(260, 3)); // needs 17 of the 20 blocks: p's blocks leave the device
        var warm = await Run(engine, p);
        // The device kept p's first 3 blocks (released tail first, so its tail went first); host memory has the rest.
        Assert.Equal(new CachedTokenSplit(48, 144, 0), warm.Last.CachedByTier);
        Assert.Equal(192, warm.Last.CachedTokens);
        Assert.Equal(cold.Tokens, warm.Tokens);
        AssertLogitsClose(cold.Logits, warm.Logits, TierTolerance, $"{dtype} host hit vs recomputation");
    }

    [Fact]
    public async Task A_bfloat16_prefix_computed_by_one_engine_is_fetched_by_another_from_redis()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var prompt = Prompt(200, 1);

        using var cold = Engine("bfloat16");
        var reference = await Run(cold, prompt);
        Assert.Equal(0, reference.Last.CachedTokens);

        using var first = Engine("bfloat16");
        await first.EnableKvTierAsync(Remote(redis, "d1:"));
        var computed = await Run(first, prompt);
        Assert.Equal(reference.Tokens, computed.Tokens);
        await first.KvTiers!.FlushAsync();

        using var second = Engine("bfloat16");
        await second.EnableKvTierAsync(Remote(redis, "d1:"));
        var fetched = await Run(second, prompt);
        // 199 usable prompt tokens = 12 full blocks of 16, all from the remote store.
        Assert.Equal(new CachedTokenSplit(0, 0, 192), fetched.Last.CachedByTier);
        Assert.Equal(reference.Tokens, fetched.Tokens);
        AssertLogitsClose(reference.Logits, fetched.Logits, TierTolerance, "bfloat16 remote hit vs recomputation");

        // The stored value is the bfloat16 block itself: header + 2 bytes per element.
        await using var direct = await ConnectionMultiplexer.ConnectAsync(redis.Address);
        var hashes = second.Hasher.HashPrefix(prompt.ToArray());
        byte[] value = (byte[])(await direct.GetDatabase().StringGetAsync(second.KvTiers!.Remote!.Key(hashes[0])))!;
        Assert.Equal(second.KvTiers.Layout.EncodedBytes, value.Length);
        Assert.Equal((byte)KvDtype.BFloat16, value[6]);
    }

    [Fact]
    public async Task A_bfloat16_block_is_never_read_by_a_float32_engine_of_the_same_model()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var rejected = new List<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == KvTierMetrics.MeterName && i.Name == "kv_tier_rejected_blocks") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var t in tags) if (t.Key == "reason") lock (rejected) rejected.Add((string)t.Value!);
        });
        listener.Start();
        var prompt = Prompt(200, 5);

        using var bf16 = Engine("bfloat16");
        await bf16.EnableKvTierAsync(Remote(redis, "d2:"));
        await Run(bf16, prompt);
        await bf16.KvTiers!.FlushAsync();

        using var coldFp32 = Engine("float32");
        var reference = await Run(coldFp32, prompt);

        // The fingerprint names the dtype, so block hashes and keys differ: a plain miss.
        using var fp32 = Engine("float32");
        Assert.NotEqual(bf16.Fingerprint.HashSeed, fp32.Fingerprint.HashSeed);
        Assert.Contains("bfloat16", bf16.Fingerprint.Canonical, StringComparison.Ordinal);
        await fp32.EnableKvTierAsync(Remote(redis, "d2:"));
        var miss = await Run(fp32, prompt);
        Assert.Equal(new CachedTokenSplit(0, 0, 0), miss.Last.CachedByTier);
        Assert.Equal(reference.Tokens, miss.Tokens);
        AssertLogitsClose(reference.Logits, miss.Logits, TierTolerance, "float32 after a bfloat16 engine");

        await fp32.KvTiers!.FlushAsync();

        // Even planted under the float32 engine's own keys, the bfloat16 bytes are rejected, not misread.
        var bfHashes = bf16.Hasher.HashPrefix(prompt.ToArray());
        var fpHashes = fp32.Hasher.HashPrefix(prompt.ToArray());
        await using (var direct = await ConnectionMultiplexer.ConnectAsync(redis.Address))
        {
            var db = direct.GetDatabase();
            for (int i = 0; i < 12; i++)
            {
                byte[] value = (byte[])(await db.StringGetAsync(bf16.KvTiers.Remote!.Key(bfHashes[i])))!;
                await db.StringSetAsync(fp32.KvTiers!.Remote!.Key(fpHashes[i]), value);
            }
        }
        using var planted = Engine("float32");
        await planted.EnableKvTierAsync(Remote(redis, "d2:"));
        var run = await Run(planted, prompt);
        Assert.Equal(new CachedTokenSplit(0, 0, 0), run.Last.CachedByTier);
        Assert.Equal(reference.Tokens, run.Tokens);
        AssertLogitsClose(reference.Logits, run.Logits, TierTolerance, "float32 with planted bfloat16 blocks");
        listener.RecordObservableInstruments();
        lock (rejected) Assert.Contains("DtypeMismatch", rejected);
    }
}
