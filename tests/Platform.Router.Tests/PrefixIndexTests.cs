// The prefix index alone: snapshots, live events, gaps, tiers, departures.
using Platform.Core.KvEvents;
using Platform.Router.Policies;

namespace Platform.Router.Tests;

public sealed class PrefixIndexTests
{
    private static KvEvent Stored(long seq, ulong hash, ulong parent = 0, KvTier tier = KvTier.Device) => new(seq, KvEventKind.BlockStored, hash, parent, tier);
    private static KvEvent Removed(long seq, ulong hash, KvTier tier = KvTier.Device) => new(seq, KvEventKind.BlockRemoved, hash, 0, tier);

    [Fact]
    public void Match_counts_leading_blocks_per_worker_and_stops_at_the_first_miss()
    {
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 0, [new(1, 0, KvTier.Device), new(2, 1, KvTier.Device), new(3, 2, KvTier.Device)]);
        index.ApplySnapshot("b", 0, [new(1, 0, KvTier.Device), new(3, 2, KvTier.Device)]);

        var m = index.Match([1UL, 2, 3, 4]);

        Assert.Equal(3, m["a"].Blocks);
        Assert.Equal(1, m["b"].Blocks); // holds block 3 but not block 2: a chained prefix stops there
        Assert.Empty(index.Match([9UL, 1]));
    }

    [Fact]
    public void Events_store_and_remove_blocks_in_sequence()
    {
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 10, []);
        var r = index.ApplyEvents("a", [Stored(11, 1), Stored(12, 2, 1), Removed(13, 1)]);

        Assert.Equal(IndexApplyStatus.Applied, r.Status);
        Assert.Equal(3, r.Applied);
        Assert.False(index.Holds("a", 1));
        Assert.True(index.Holds("a", 2));
        Assert.Equal(13, index.LastSequence("a"));
    }

    [Fact]
    public void Duplicates_are_skipped_and_a_gap_stops_and_asks_for_a_resync()
    {
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 5, [new(1, 0, KvTier.Device)]);
        var dup = index.ApplyEvents("a", [Removed(5, 1), Stored(6, 2)]);
        Assert.Equal(1, dup.Applied);
        Assert.True(index.Holds("a", 1)); // #5 was already in the snapshot

        var gap = index.ApplyEvents("a", [Stored(7, 3), Stored(9, 4)]);
        Assert.Equal(IndexApplyStatus.Gap, gap.Status);
        Assert.Equal(8, gap.ExpectedSequence);
        Assert.Equal(9, gap.ReceivedSequence);
        Assert.True(index.Holds("a", 3));
        Assert.False(index.Holds("a", 4));

        // A resync snapshot replaces everything believed about the worker.
        index.ApplySnapshot("a", 20, [new(4, 0, KvTier.Device)]);
        Assert.False(index.Holds("a", 1));
        Assert.True(index.Holds("a", 4));
        Assert.Equal(1, index.BlockCount);
    }

    [Fact]
    public void Events_before_any_snapshot_are_refused()
    {
        var index = new PrefixIndex();
        Assert.Equal(IndexApplyStatus.NoSnapshot, index.ApplyEvents("a", [Stored(1, 1)]).Status);
        Assert.Equal(0, index.BlockCount);
    }

    [Fact]
    public void Tiers_are_tracked_per_block_and_cleared_per_tier()
    {
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 0, []);
        index.ApplyEvents("a", [Stored(1, 1), Stored(2, 1, 0, KvTier.Host), Stored(3, 2, 1, KvTier.Host)]);

        var m = index.Match([1UL, 2]);
        Assert.Equal(new PrefixOverlap(2, 1, 1, 0), m["a"]); // block 1 counts at its best tier

        index.ApplyEvents("a", [new KvEvent(4, KvEventKind.Cleared, 0, 0, KvTier.Device)]);
        Assert.Equal(new PrefixOverlap(2, 0, 2, 0), index.Match([1UL, 2])["a"]);

        index.ApplyEvents("a", [Removed(5, 1, KvTier.Host)]);
        Assert.False(index.Holds("a", 1));
        Assert.Empty(index.Match([1UL, 2]));
    }

    [Fact]
    public void Removing_a_worker_forgets_only_its_blocks()
    {
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 0, [new(1, 0, KvTier.Device), new(2, 1, KvTier.Device)]);
        index.ApplySnapshot("b", 0, [new(1, 0, KvTier.Device)]);

        index.RemoveWorker("a");

        Assert.Equal(0, index.WorkerBlockCount("a"));
        Assert.Null(index.LastSequence("a"));
        Assert.Equal(1, index.BlockCount);
        Assert.Equal(["b"], index.Match([1UL, 2]).Keys);
        Assert.Equal(IndexApplyStatus.NoSnapshot, index.ApplyEvents("a", [Stored(1, 5)]).Status);
    }
}
