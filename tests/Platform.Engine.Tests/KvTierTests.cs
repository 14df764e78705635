// The engine with the KV tier (host memory + a real redis-server): a prefix
// computed by one engine is fetched by another and gives the same logits as a
// cold run (1e-5); blocks evicted from the device come back from host memory;
// corrupt blocks planted in Redis are ignored, recomputed and counted; a Redis
// that is down costs nothing but the tier; tier presence is published as KV events.
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Platform.Core.KvEvents;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using StackExchange.Redis;

namespace Platform.Engine.Tests;

public sealed class KvTierTests
{
    private static List<int> Prompt(int length, int seed) => KvTierRuns.Prompt(length, seed);

    private static Task<(List<int> Tokens, List<float[]> Logits, GenerationChunk Last)> Run(LlmEngine engine, IReadOnlyList<int> prompt) => KvTierRuns.Run(engine, prompt);

    private static void AssertLogitsEqual(List<float[]> a, List<float[]> b, double tolerance)
    {
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            for (int j = 0; j < a[i].Length; j++)
                Assert.True(Math.Abs(a[i][j] - b[i][j]) <= tolerance, $"step {i} logit {j}: {a[i][j]} vs {b[i][j]}");
    }

    private static LlmEngine Engine(int blocks = 64) =>
        TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = blocks, Threads = 2, DefaultSeed = 1 });

    private static KvTierOptions Remote(RedisServerProcess redis, string prefix) => new()
    {
        Mode = "remote",
        HostMemory = "64MB",
        Remote = new RemoteTierOptions { Address = redis.Address, KeyPrefix = prefix, OperationTimeoutMs = 2000 },
    };

    [Fact]
    public async Task A_prefix_computed_by_one_engine_is_fetched_by_another_with_equal_logits()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var prompt = Prompt(200, 1);

        using var cold = Engine();
        var reference = await Run(cold, prompt);
        Assert.Equal(0, reference.Last.CachedTokens);

        using var first = Engine();
        await first.EnableKvTierAsync(Remote(redis, "t1:"));
        var computed = await Run(first, prompt);
        Assert.Equal(reference.Tokens, computed.Tokens);
        await first.KvTiers!.FlushAsync();

        using var second = Engine();
        await second.EnableKvTierAsync(Remote(redis, "t1:"));
        var fetched = await Run(second, prompt);
        // 199 usable prompt tokens = 12 full blocks of 16, all from the remote store.
        Assert.Equal(192, fetched.Last.CachedTokens);
        Assert.Equal(new CachedTokenSplit(0, 0, 192), fetched.Last.CachedByTier);
        Assert.Equal(reference.Tokens, fetched.Tokens);
        AssertLogitsEqual(reference.Logits, fetched.Logits, 1e-5);

        // The same engine again: now a device hit.
        var again = await Run(second, prompt);
        Assert.Equal(new CachedTokenSplit(192, 0, 0), again.Last.CachedByTier);
        Assert.Equal(reference.Tokens, again.Tokens);
    }

    [Fact]
    public async Task Blocks_evicted_from_the_device_come_back_from_host_memory()
    {
        using var engine = Engine(blocks: 20);
        await engine.EnableKvTierAsync(new KvTierOptions { Mode = "host", HostMemory = "16MB" });
        var p = Prompt(200, 2);
        var cold = await Run(engine, p);
        await engine.KvTiers!.FlushAsync();
        await Run(engine, Prompt(260, 3)); // needs 17 of the 20 blocks: p's blocks leave the device
        var warm = await Run(engine, p);
        Assert.Equal(cold.Tokens, warm.Tokens);
        AssertLogitsEqual(cold.Logits, warm.Logits, 1e-5);
        // The device kept p's first 3 blocks (released tail first, so its tail went first); host memory has the rest.
        Assert.Equal(new CachedTokenSplit(48, 144, 0), warm.Last.CachedByTier);
        Assert.Equal(192, warm.Last.CachedTokens);
    }

    [Fact]
    public async Task Corrupt_and_truncated_blocks_in_redis_are_ignored_recomputed_and_counted()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        var prompt = Prompt(200, 4);
        var rejected = new List<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == KvTierMetrics.MeterName && i.Name == "kv_tier_rejected_blocks") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var t in tags) if (t.Key == "reason") lock (rejected) rejected.Add((string)t.Value!);
        });
        listener.Start();

        using var first = Engine();
        await first.EnableKvTierAsync(Remote(redis, "t2:"));
        var reference = await Run(first, prompt);
        await first.KvTiers!.FlushAsync();

        // Damage block 5: flip one payload bit.
        var hashes = first.Hasher.HashPrefix(prompt.ToArray());
        var tier = first.KvTiers.Remote!;
        await using (var direct = await ConnectionMultiplexer.ConnectAsync(redis.Address))
        {
            var db = direct.GetDatabase();
            byte[] b5 = (byte[])(await db.StringGetAsync(tier.Key(hashes[5])))!;
            b5[BlockCodec.HeaderBytes + 7] ^= 0x20;
            await db.StringSetAsync(tier.Key(hashes[5]), b5);
        }

        using var second = Engine();
        await second.EnableKvTierAsync(Remote(redis, "t2:"));
        var run = await Run(second, prompt);
        Assert.Equal(new CachedTokenSplit(0, 0, 5 * 16), run.Last.CachedByTier);
        Assert.Equal(reference.Tokens, run.Tokens);
        AssertLogitsEqual(reference.Logits, run.Logits, 1e-5);
        listener.RecordObservableInstruments();
        lock (rejected) Assert.Contains("ChecksumMismatch", rejected);

        // Truncated and foreign values under the right key: also misses.
        await second.KvTiers!.FlushAsync();
        await using (var direct = await ConnectionMultiplexer.ConnectAsync(redis.Address))
        {
            var db = direct.GetDatabase();
            byte[] b0 = (byte[])(await db.StringGetAsync(tier.Key(hashes[0])))!;
            await db.StringSetAsync(tier.Key(hashes[0]), b0[..(b0.Length / 2)]);
        }
        using var third = Engine();
        await third.EnableKvTierAsync(Remote(redis, "t2:"));
        var truncated = await Run(third, prompt);
        Assert.Equal(0, truncated.Last.CachedTokens);
        Assert.Equal(reference.Tokens, truncated.Tokens);
        lock (rejected) Assert.Contains("Truncated", rejected);
    }

    [Fact]
    public async Task With_redis_down_requests_are_served_promptly_and_the_tier_resumes_when_it_returns()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        string address = redis.Address;
        await redis.StopAsync();
        using var engine = Engine();
        await engine.EnableKvTierAsync(new KvTierOptions
        {
            Mode = "remote",
            HostMemory = "16MB",
            Remote = new RemoteTierOptions { Address = address, OperationTimeoutMs = 200, ConnectTimeoutMs = 200 },
        });
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 6; i++)
        {
            var r = await Run(engine, Prompt(100, 10 + i));
            Assert.Equal(8, r.Tokens.Count);
        }
        Assert.InRange(sw.ElapsedMilliseconds, 0, 20_000);
        Assert.True(engine.KvTiers!.Remote!.BreakerOpen, "the breaker should be open while Redis is down");
        var p = Prompt(100, 10);
        var hit = await Run(engine, p);
        Assert.Equal(96, hit.Last.CachedTokens);

        // Redis returns (empty): the tier resumes by itself and new blocks reach it again.
        await redis.StartAgainAsync();
        await using var direct = await ConnectionMultiplexer.ConnectAsync(address);
        var server = direct.GetServer(direct.GetEndPoints()[0]);
        var until = DateTime.UtcNow.AddSeconds(30);
        int seed = 100;
        while (await server.DatabaseSizeAsync() == 0 && DateTime.UtcNow < until)
        {
            await Run(engine, Prompt(40, seed++));
            await engine.KvTiers.FlushAsync();
            await Task.Delay(200);
        }
        Assert.True(await server.DatabaseSizeAsync() > 0, "the remote tier did not resume after Redis came back");
        Assert.False(engine.KvTiers.Remote.BreakerOpen);
    }

    [Fact]
    public async Task Tier_presence_is_published_as_kv_events_and_in_snapshots()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        using var engine = Engine();
        await engine.EnableKvTierAsync(Remote(redis, "t3:"));
        var events = new List<KvEvent>();
        using var sub = await engine.SubscribeKvEventsAsync(batch => { lock (events) events.AddRange(batch); });
        await Run(engine, Prompt(100, 20)); // 6 full blocks (prompt + outputs: 108 tokens)
        await engine.KvTiers!.FlushAsync();
        var until = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < until)
        {
            lock (events) if (events.Count(e => e.Tier == KvTier.Remote) >= 6) break;
            await Task.Delay(20);
        }
        lock (events)
        {
            foreach (var tier in new[] { KvTier.Device, KvTier.Host, KvTier.Remote })
                Assert.Equal(6, events.Count(e => e.Tier == tier && e.Kind == KvEventKind.BlockStored));
            for (int i = 1; i < events.Count; i++) Assert.Equal(events[i - 1].Sequence + 1, events[i].Sequence);
        }
        using var late = await engine.SubscribeKvEventsAsync(_ => { });
        Assert.Equal(6, late.CachedBlocks.Count);
        Assert.Equal(6, late.TierBlocks.Count(b => b.Tier == KvTier.Host));
        Assert.Equal(6, late.TierBlocks.Count(b => b.Tier == KvTier.Remote));
    }
}
