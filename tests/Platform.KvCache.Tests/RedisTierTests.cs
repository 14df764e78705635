// Remote tier against a real redis-server on loopback: batched puts with TTL,
// prefix fetches that stop at the first miss or rejected value, namespacing by
// fingerprint, and the fault story: the server is killed mid-test, operations
// fail fast, the breaker opens (operations become free skips), the server comes
// back and the tier resumes by itself.
using System.Diagnostics;
using Platform.KvCache;
using StackExchange.Redis;

namespace Platform.KvCache.Tests;

public sealed class RedisTierTests
{
    private static RemoteTierOptions Options(RedisServerProcess server, int breakMs = 1000) => new()
    {
        Address = server.Address,
        KeyPrefix = "test:",
        TtlSeconds = 120,
        OperationTimeoutMs = 300,
        BreakerMinimumThroughput = 2,
        BreakerBreakMs = breakMs,
        BreakerSamplingMs = 5000,
    };

    private static (KvBlockLayout Layout, ulong[] Hashes, byte[][] Encoded) Blocks(int count)
    {
        var layout = CodecTests.Layout();
        var hashes = new ulong[count];
        var encoded = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            hashes[i] = 0xABC000UL + (ulong)i;
            encoded[i] = new byte[layout.EncodedBytes];
            BlockCodec.Encode(layout, hashes[i], i == 0 ? 0 : hashes[i - 1], CodecTests.RandomRaw(layout, i), encoded[i]);
        }
        return (layout, hashes, encoded);
    }

    private static Func<int, ReadOnlyMemory<byte>, bool> Decoder(KvBlockLayout layout, ulong[] hashes, List<int> taken, List<DecodeStatus>? rejected = null) =>
        (i, bytes) =>
        {
            var status = BlockCodec.Decode(layout, hashes[i], bytes.Span, new byte[layout.RawBytes], out _);
            if (status != DecodeStatus.Ok)
            {
                rejected?.Add(status);
                return false;
            }
            taken.Add(i);
            return true;
        };

    [Fact]
    public async Task Puts_then_fetches_a_prefix_until_the_first_missing_block()
    {
        await using var server = await RedisServerProcess.StartAsync();
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(Options(server), "fp1", metrics);
        var (layout, hashes, encoded) = Blocks(10);

        var batch = Enumerable.Range(0, 10).Where(i => i != 6).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList();
        Assert.Equal(9, await Stored.PutAsync(tier, batch, 9));

        var taken = new List<int>();
        Assert.Equal(6, await tier.FetchPrefixAsync(hashes, 0, 10, Decoder(layout, hashes, taken)));
        Assert.Equal([0, 1, 2, 3, 4, 5], taken);
        taken.Clear();
        Assert.Equal(2, await tier.FetchPrefixAsync(hashes, 4, 5, Decoder(layout, hashes, taken)));
        Assert.Equal([4, 5], taken);

        // TTL is set; keys carry prefix and fingerprint.
        await using var direct = await ConnectionMultiplexer.ConnectAsync(server.Address);
        var ttl = await direct.GetDatabase().KeyTimeToLiveAsync(tier.Key(hashes[0]));
        Assert.InRange(ttl!.Value.TotalSeconds, 100, 120);
        Assert.StartsWith("test:fp1:", tier.Key(hashes[0]).ToString(), StringComparison.Ordinal);

        // Another model fingerprint sees nothing.
        await using var other = await RedisKvTier.ConnectAsync(Options(server), "fp2", metrics);
        Assert.Equal(0, await other.FetchPrefixAsync(hashes, 0, 10, Decoder(layout, hashes, [])));
    }

    [Fact]
    public async Task Planted_corrupt_truncated_and_foreign_values_stop_the_prefix()
    {
        await using var server = await RedisServerProcess.StartAsync();
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(Options(server), "fp1", metrics);
        var (layout, hashes, encoded) = Blocks(8);
        await Stored.PutAsync(tier, Enumerable.Range(0, 8).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList(), 8);

        await using var direct = await ConnectionMultiplexer.ConnectAsync(server.Address);
        var db = direct.GetDatabase();
        var flipped = (byte[])encoded[2].Clone();
        flipped[500] ^= 1;
        await db.StringSetAsync(tier.Key(hashes[2]), flipped);
        var rejected = new List<DecodeStatus>();
        Assert.Equal(2, await tier.FetchPrefixAsync(hashes, 0, 8, Decoder(layout, hashes, [], rejected)));
        await db.StringSetAsync(tier.Key(hashes[1]), encoded[1][..100]);
        Assert.Equal(1, await tier.FetchPrefixAsync(hashes, 0, 8, Decoder(layout, hashes, [], rejected)));
        var foreign = CodecTests.Layout(seed: 42);
        var foreignBlock = new byte[foreign.EncodedBytes];
        BlockCodec.Encode(foreign, hashes[0], 0, CodecTests.RandomRaw(foreign), foreignBlock);
        await db.StringSetAsync(tier.Key(hashes[0]), foreignBlock);
        await db.StringSetAsync(tier.Key(hashes[3]), "not a block at all");
        Assert.Equal(0, await tier.FetchPrefixAsync(hashes, 0, 8, Decoder(layout, hashes, [], rejected)));
        Assert.Equal(0, await tier.FetchPrefixAsync(hashes, 3, 5, Decoder(layout, hashes, [], rejected)));
        Assert.Equal([DecodeStatus.ChecksumMismatch, DecodeStatus.Truncated, DecodeStatus.ForeignModel, DecodeStatus.Truncated], rejected);
        // The untouched tail is still served.
        Assert.Equal(4, await tier.FetchPrefixAsync(hashes, 4, 4, Decoder(layout, hashes, [])));
    }

    [Fact]
    public async Task Server_down_opens_the_breaker_fails_fast_and_the_tier_resumes_when_it_returns()
    {
        await using var server = await RedisServerProcess.StartAsync();
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(Options(server, breakMs: 1000), "fp1", metrics);
        var (layout, hashes, encoded) = Blocks(4);
        var all = Enumerable.Range(0, 4).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList();
        Assert.Equal(4, await Stored.PutAsync(tier, all, 4));

        await server.StopAsync();
        // Failing operations are bounded by the operation budget, then the breaker opens.
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 6 && !tier.BreakerOpen; i++)
        {
            var op = Stopwatch.StartNew();
            Assert.Equal(0, await tier.FetchPrefixAsync(hashes, 0, 4, Decoder(layout, hashes, [])));
            Assert.InRange(op.ElapsedMilliseconds, 0, 1500);
        }
        Assert.True(tier.BreakerOpen, "the breaker should open after repeated failures");
        // Open: operations are skipped at once.
        var skip = Stopwatch.StartNew();
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(0, await tier.FetchPrefixAsync(hashes, 0, 4, Decoder(layout, hashes, [])));
            Assert.Equal(0, await tier.PutAsync(all));
        }
        // 200 operations at one budget each would take a minute; skipped, they take next to nothing
        // (the bound is loose: these machines are shared and a test is not a benchmark).
        Assert.InRange(skip.ElapsedMilliseconds, 0, 5_000);

        await server.StartAgainAsync(); // empty again: nothing persisted
        var until = DateTime.UtcNow.AddSeconds(20);
        int stored = 0;
        while (DateTime.UtcNow < until && stored != 4)
        {
            stored = await tier.PutAsync(all);
            if (stored != 4) await Task.Delay(200);
        }
        Assert.True(stored == 4, $"tier did not resume: connected={tier.IsConnected}, breaker={tier.BreakerState}");
        Assert.False(tier.BreakerOpen);
        // Reads resume too (retried: one read may still fall into the reconnect under a loaded machine).
        int fetched = 0;
        for (var readUntil = DateTime.UtcNow.AddSeconds(20); DateTime.UtcNow < readUntil && fetched != 4; await Task.Delay(200))
            fetched = await tier.FetchPrefixAsync(hashes, 0, 4, Decoder(layout, hashes, []));
        Assert.Equal(4, fetched);
    }

    [Fact]
    public async Task A_stalled_server_costs_one_operation_budget_not_the_stall()
    {
        await using var server = await RedisServerProcess.StartAsync("--enable-debug-command", "yes");
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(Options(server), "fp1", metrics);
        var (layout, hashes, encoded) = Blocks(4);
        var all = Enumerable.Range(0, 4).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList();
        Assert.Equal(4, await Stored.PutAsync(tier, all, 4));

        await using var direct = await ConnectionMultiplexer.ConnectAsync(server.Address);
        _ = direct.GetDatabase().ExecuteAsync("DEBUG", "SLEEP", "10"); // the server stops answering for 10 s
        await Task.Delay(100);
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, await tier.FetchPrefixAsync(hashes, 0, 4, Decoder(layout, hashes, [])));
        Assert.Equal(0, await tier.PutAsync(all));
        Assert.InRange(sw.ElapsedMilliseconds, 0, 5_000); // two operations of 300 ms (loose on a shared machine), not the 10 s stall

        var until = DateTime.UtcNow.AddSeconds(25);
        int n = 0;
        while (DateTime.UtcNow < until && (n = await tier.FetchPrefixAsync(hashes, 0, 4, Decoder(layout, hashes, []))) != 4) await Task.Delay(200);
        Assert.Equal(4, n);
    }

    [Fact]
    public async Task Auth_from_configuration_is_used_and_a_missing_password_only_disables_the_tier()
    {
        await using var server = await RedisServerProcess.StartAsync("--requirepass", "s3cret");
        using var metrics = new KvTierMetrics();
        var (layout, hashes, encoded) = Blocks(2);
        var all = Enumerable.Range(0, 2).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList();

        await using (var authed = await RedisKvTier.ConnectAsync(Options(server) with { Password = "s3cret" }, "fp1", metrics))
        {
            Assert.Equal(2, await Stored.PutAsync(authed, all, 2));
            Assert.Equal(2, await authed.FetchPrefixAsync(hashes, 0, 2, Decoder(layout, hashes, [])));
        }
        await using var anonymous = await RedisKvTier.ConnectAsync(Options(server), "fp1", metrics);
        var sw = Stopwatch.StartNew();
        Assert.Equal(0, await anonymous.PutAsync(all));
        Assert.Equal(0, await anonymous.FetchPrefixAsync(hashes, 0, 2, Decoder(layout, hashes, [])));
        Assert.InRange(sw.ElapsedMilliseconds, 0, 3000);
    }

    [Fact]
    public async Task A_full_store_fails_puts_fast_and_the_tier_resumes_when_there_is_room()
    {
        // maxmemory 1 byte with noeviction: every write is refused with OOM.
        await using var server = await RedisServerProcess.StartAsync("--maxmemory", "1", "--maxmemory-policy", "noeviction");
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(Options(server, breakMs: 1000), "fp1", metrics);
        var (layout, hashes, encoded) = Blocks(2);
        var all = Enumerable.Range(0, 2).Select(i => (hashes[i], (ReadOnlyMemory<byte>)encoded[i])).ToList();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 5; i++) Assert.Equal(0, await tier.PutAsync(all));
        Assert.InRange(sw.ElapsedMilliseconds, 0, 2000);
        Assert.True(tier.BreakerOpen, "repeated refusals should open the breaker");

        await using (var direct = await ConnectionMultiplexer.ConnectAsync(server.Address + ",allowAdmin=true"))
            await direct.GetDatabase().ExecuteAsync("CONFIG", "SET", "maxmemory", "0");
        var until = DateTime.UtcNow.AddSeconds(15);
        int stored = 0;
        while (DateTime.UtcNow < until && (stored = await tier.PutAsync(all)) != 2) await Task.Delay(200);
        Assert.Equal(2, stored);
        Assert.Equal(2, await tier.FetchPrefixAsync(hashes, 0, 2, Decoder(layout, hashes, [])));
    }
}
