// The embedded Garnet server speaks enough RESP for the remote tier: batched
// SET with TTL, pipelined GETs through pooled leases.
using Platform.KvCache.Garnet;

namespace Platform.KvCache.Tests;

public sealed class GarnetTests
{
    [Fact]
    public async Task The_remote_tier_works_against_embedded_Garnet()
    {
        using var garnet = EmbeddedGarnet.Start(memory: "64m");
        using var metrics = new KvTierMetrics();
        await using var tier = await RedisKvTier.ConnectAsync(new RemoteTierOptions { Address = garnet.Address, TtlSeconds = 60 }, "fpg", metrics);
        var layout = CodecTests.Layout();
        var hashes = new ulong[] { 11, 12, 13 };
        var blocks = hashes.Select((h, i) =>
        {
            var e = new byte[layout.EncodedBytes];
            BlockCodec.Encode(layout, h, i == 0 ? 0 : hashes[i - 1], CodecTests.RandomRaw(layout, i), e);
            return (h, (ReadOnlyMemory<byte>)e);
        }).ToList();
        Assert.Equal(3, await Stored.PutAsync(tier, blocks, 3));
        var raw = new byte[layout.RawBytes];
        int n = 0;
        for (var until = DateTime.UtcNow.AddSeconds(20); DateTime.UtcNow < until && n != 3; await Task.Delay(200))
            n = await tier.FetchPrefixAsync(hashes, 0, 3, (i, bytes) => BlockCodec.Decode(layout, hashes[i], bytes.Span, raw, out _) == DecodeStatus.Ok);
        Assert.Equal(3, n);
        Assert.Equal(CodecTests.RandomRaw(layout, 2), raw);
    }
}

/// <summary>
/// Test setup that must not race a loaded machine: the first operations on a fresh connection can exceed the
/// tier's small budget (and are then dropped, as designed); puts are idempotent, so setup retries them.
/// </summary>
internal static class Stored
{
    public static async Task<int> PutAsync(RedisKvTier tier, IReadOnlyList<(ulong, ReadOnlyMemory<byte>)> blocks, int expected)
    {
        int stored = 0;
        for (var until = DateTime.UtcNow.AddSeconds(20); DateTime.UtcNow < until; await Task.Delay(200))
            if ((stored = await tier.PutAsync(blocks)) == expected) break;
        return stored;
    }
}
