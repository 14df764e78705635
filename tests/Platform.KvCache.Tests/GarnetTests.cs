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
        Assert.Equal(3, await tier.PutAsync(blocks));
        var raw = new byte[layout.RawBytes];
        int n = await tier.FetchPrefixAsync(hashes, 0, 3, (i, bytes) => BlockCodec.Decode(layout, hashes[i], bytes.Span, raw, out _) == DecodeStatus.Ok);
        Assert.Equal(3, n);
        Assert.Equal(CodecTests.RandomRaw(layout, 2), raw);
    }
}
