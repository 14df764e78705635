// Host tier: budget in whole blocks, least-recently-used eviction (reads count
// as use), eviction reports, removal, and no allocation on puts and hits once
// the slabs exist.
using Platform.KvCache;

namespace Platform.KvCache.Tests;

public sealed class HostTierTests
{
    private static byte[] Block(int size, byte fill) => Enumerable.Repeat(fill, size).ToArray();

    [Fact]
    public void Budget_holds_whole_blocks_and_evicts_least_recently_used_first()
    {
        var tier = new HostKvTier(budgetBytes: 3 * 100 + 99, slotBytes: 100);
        Assert.Equal(3, tier.Capacity);
        for (ulong h = 1; h <= 3; h++) Assert.True(tier.Put(h, h - 1, Block(100, (byte)h), out var e) && !e.Evicted);
        Assert.Equal(300, tier.UsedBytes);

        // Reading block 1 makes it most recent: block 2 is now the oldest.
        var copy = new byte[100];
        Assert.True(tier.TryCopy(1, copy));
        Assert.All(copy, b => Assert.Equal(1, b));

        Assert.True(tier.Put(4, 3, Block(100, 4), out var evicted));
        Assert.True(evicted.Evicted);
        Assert.Equal(2UL, evicted.Hash);
        Assert.Equal(1UL, evicted.Parent);
        Assert.False(tier.Contains(2));
        Assert.True(tier.Contains(1) && tier.Contains(3) && tier.Contains(4));
        Assert.Equal(3, tier.Count);

        // Re-putting an existing block refreshes it instead of storing twice.
        Assert.False(tier.Put(3, 2, Block(100, 9), out _));
        Assert.True(tier.Put(5, 4, Block(100, 5), out evicted));
        Assert.Equal(1UL, evicted.Hash);
        Assert.True(tier.TryCopy(3, copy));
        Assert.All(copy, b => Assert.Equal(3, b));
        Assert.Equal(2, tier.Evictions);
    }

    [Fact]
    public void Removed_slots_are_reused_and_remote_marks_travel_with_evictions()
    {
        var tier = new HostKvTier(200, 100);
        tier.Put(1, 0, Block(100, 1), out _);
        tier.Put(2, 1, Block(100, 2), out _);
        tier.MarkRemote(1);
        Assert.True(tier.IsMarkedRemote(1));
        Assert.False(tier.IsMarkedRemote(2));
        Assert.True(tier.Remove(2));
        Assert.False(tier.Remove(2));
        Assert.True(tier.Put(3, 2, Block(100, 3), out var e) && !e.Evicted);
        Assert.True(tier.Put(4, 3, Block(100, 4), out e));
        Assert.True(e.Evicted && e.Hash == 1 && e.WasInRemote);
        Assert.Equal([(3UL, 2UL), (4UL, 3UL)], tier.Snapshot().OrderBy(x => x.Hash));
    }

    [Fact]
    public void A_budget_below_one_block_is_a_configuration_error()
    {
        var e = Assert.Throws<ArgumentException>(() => new HostKvTier(99, 100));
        Assert.Contains("--kv-host-memory", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new HostKvTier(1000, 100).Put(1, 0, new byte[99], out _));
    }

    [Fact]
    public void Puts_and_hits_allocate_nothing_once_warm()
    {
        const int size = 64 * 1024;
        var tier = new HostKvTier(16L * size, size);
        var data = Block(size, 7);
        var copy = new byte[size];
        for (ulong h = 0; h < 40; h++) tier.Put(h, 0, data, out _); // touches every slab and fills the map
        BlockReader<int, byte> firstByte = static (span, _) => span[0];
        tier.TryRead(39, 0, firstByte, out byte _);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (ulong h = 40; h < 1040; h++)
        {
            tier.Put(h, h - 1, data, out _);
            tier.TryCopy(h, copy);
            tier.TryRead(h, 0, firstByte, out byte first);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
    }

    [Theory]
    [InlineData("512MB", 512L << 20)]
    [InlineData("4GiB", 4L << 30)]
    [InlineData("1g", 1L << 30)]
    [InlineData("1.5k", 1536)]
    [InlineData("12345", 12345)]
    public void Sizes_parse(string text, long expected) => Assert.Equal(expected, ByteSize.Parse(text));

    [Fact]
    public void Bad_options_name_the_switch_to_change()
    {
        var errors = new KvTierOptions { Mode = "cloud", HostMemory = "lots", Remote = new RemoteTierOptions { Address = null } }.Validate().ToList();
        Assert.Contains(errors, e => e.Contains("--kv-tier off, host or remote", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("--kv-host-memory", StringComparison.Ordinal));
        var remote = new KvTierOptions { Mode = "remote" }.Validate().ToList();
        Assert.Contains(remote, e => e.Contains("--redis HOST:PORT", StringComparison.Ordinal));
        Assert.Empty(new KvTierOptions { Mode = "host" }.Validate());
    }
}
