// Placement policies with fixed loads, a fixed index and a scripted random source.
using Platform.Core.KvEvents;
using Platform.Router.Policies;

namespace Platform.Router.Tests;

public sealed class PolicyTests
{
    private const int BlockSize = 16;

    private sealed class ScriptedRandom(params int[] draws) : IRandomSource
    {
        private int _i;
        public List<int> Bounds { get; } = [];

        public int Next(int maxExclusive)
        {
            Bounds.Add(maxExclusive);
            return draws.Length == 0 ? 0 : draws[_i++ % draws.Length] % maxExclusive;
        }
    }

    private static WorkerState Worker(string id, int running = 0, int waiting = 0, long queued = 0, int kvUsed = 0)
    {
        var w = new WorkerState(id);
        w.ReportLoad(new WorkerLoad(running, waiting, queued, kvUsed, 1000));
        return w;
    }

    private static PlacementRequest Prompt(int blocks, string? session = null) =>
        new([.. Enumerable.Range(1, blocks).Select(i => (ulong)i)], blocks * BlockSize + 5, BlockSize, session);

    private static PrefixIndex IndexWith(string worker, int blocks, KvTier tier = KvTier.Device)
    {
        var index = new PrefixIndex();
        index.ApplySnapshot(worker, 0, Enumerable.Range(1, blocks).Select(i => new HeldBlock((ulong)i, (ulong)(i - 1), tier)));
        return index;
    }

    [Fact]
    public void Round_robin_cycles_through_candidates()
    {
        var ws = new[] { Worker("a"), Worker("b"), Worker("c") };
        var p = new RoundRobinPolicy();
        var picks = Enumerable.Range(0, 6).Select(_ => p.Place(Prompt(1), ws).Worker!.Id).ToArray();
        Assert.Equal(["a", "b", "c", "a", "b", "c"], picks);
        Assert.Equal(PlacementResult.None, p.Place(Prompt(1), []));
    }

    [Fact]
    public void Random_uses_the_injected_draws()
    {
        var ws = new[] { Worker("a"), Worker("b"), Worker("c") };
        var p = new RandomPolicy(new ScriptedRandom(2, 0, 1));
        Assert.Equal(["c", "a", "b"], Enumerable.Range(0, 3).Select(_ => p.Place(Prompt(1), ws).Worker!.Id));
    }

    [Fact]
    public void Seeded_random_sources_repeat_their_draws()
    {
        var ws = new[] { Worker("a"), Worker("b"), Worker("c"), Worker("d") };
        string[] Run(int seed)
        {
            var p = new RandomPolicy(new SystemRandomSource(seed));
            return [.. Enumerable.Range(0, 20).Select(_ => p.Place(Prompt(1), ws).Worker!.Id)];
        }
        Assert.Equal(Run(42), Run(42));
        Assert.True(Run(42).Distinct().Count() > 1);
    }

    [Fact]
    public void Least_loaded_prefers_fewer_requests_then_less_queued_prefill()
    {
        var random = new ScriptedRandom();
        var p = new LeastLoadedPolicy(random);
        Assert.Equal("b", p.Place(Prompt(1), [Worker("a", running: 3), Worker("b", running: 1), Worker("c", running: 2)]).Worker!.Id);
        Assert.Equal("c", p.Place(Prompt(1), [Worker("a", running: 1, queued: 500), Worker("c", running: 1, queued: 10)]).Worker!.Id);

        // The router's own in-flight count counts even before the worker reports it.
        var busy = Worker("a");
        using var lease = busy.Lease(100);
        Assert.Equal("b", p.Place(Prompt(1), [busy, Worker("b")]).Worker!.Id);
    }

    [Fact]
    public void Kv_aware_sends_a_shared_prefix_to_the_worker_holding_it()
    {
        var index = IndexWith("b", 8);
        var p = new KvAwarePolicy(index, new KvAwareOptions(), new ScriptedRandom());
        var r = p.Place(Prompt(10), [Worker("a"), Worker("b"), Worker("c")]);

        Assert.Equal("b", r.Worker!.Id);
        Assert.Equal(8, r.OverlapBlocks);
        Assert.Equal(PlacementReason.LowestCost, r.Reason);
        Assert.Equal(10 * BlockSize + 5 - 8 * BlockSize, r.Cost);
    }

    [Fact]
    public void Kv_aware_cost_follows_the_documented_formula()
    {
        var index = IndexWith("a", 4, KvTier.Host);
        var options = new KvAwareOptions { QueuedPrefillWeight = 0.5, DecodeLoadWeight = 0.25, HostCredit = 0.75 };
        var p = new KvAwarePolicy(index, options, new ScriptedRandom());
        var a = Worker("a", queued: 100, kvUsed: 10);
        var request = Prompt(6);

        double expected = (request.PromptTokens - 4 * 0.75 * BlockSize) + 0.5 * 100 + 0.25 * 10 * BlockSize;
        Assert.Equal(expected, p.Cost(request, a, index.Match(request.BlockHashes)), 6);
    }

    [Fact]
    public void Blocks_in_the_shared_remote_store_count_for_every_worker_at_remote_credit()
    {
        // a holds blocks 1..6 on device and has also written 1..8 to the shared store; b holds nothing itself.
        var index = new PrefixIndex();
        index.ApplySnapshot("a", 0, [
            .. Enumerable.Range(1, 6).Select(i => new HeldBlock((ulong)i, (ulong)(i - 1), KvTier.Device)),
            .. Enumerable.Range(1, 8).Select(i => new HeldBlock((ulong)i, (ulong)(i - 1), KvTier.Remote))]);
        var options = new KvAwareOptions { RemoteCredit = 0.5, DecodeLoadWeight = 0 };
        var p = new KvAwarePolicy(index, options, new ScriptedRandom());
        var request = Prompt(10);
        var a = Worker("a", queued: 1000);
        var b = Worker("b");
        Assert.Equal(8, index.SharedRemotePrefix(request.BlockHashes));

        var overlaps = index.Match(request.BlockHashes);
        // a: 6 device blocks, then 2 more from the store; b: all 8 from the store.
        Assert.Equal(request.PromptTokens - (6 + 2 * 0.5) * BlockSize + 1000, p.Cost(request, a, overlaps, 8), 6);
        Assert.Equal(request.PromptTokens - 8 * 0.5 * BlockSize, p.Cost(request, b, overlaps, 8), 6);
        var placed = p.Place(request, [a, b]);
        Assert.Equal("b", placed.Worker!.Id);
        Assert.Equal(8, placed.OverlapBlocks);

        // Without the remote reports b gets no credit at all.
        var deviceOnly = IndexWith("a", 6);
        Assert.Equal(0, deviceOnly.SharedRemotePrefix(request.BlockHashes));
        Assert.Equal(request.PromptTokens, new KvAwarePolicy(deviceOnly, options, new ScriptedRandom()).Cost(request, b, deviceOnly.Match(request.BlockHashes)), 6);
    }

    [Fact]
    public void Kv_aware_trades_cache_hits_against_queued_prefill()
    {
        var index = IndexWith("a", 4);
        var p = new KvAwarePolicy(index, new KvAwareOptions(), new ScriptedRandom());
        // a saves 64 tokens of prefill but has 1,000 queued: b (idle) starts sooner.
        Assert.Equal("b", p.Place(Prompt(6), [Worker("a", running: 1, queued: 1000), Worker("b", running: 1)]).Worker!.Id);
        // With only 10 queued tokens on a, its cache wins.
        Assert.Equal("a", p.Place(Prompt(6), [Worker("a", running: 1, queued: 10), Worker("b", running: 1)]).Worker!.Id);
    }

    [Fact]
    public void Hot_spot_guard_sends_work_away_from_a_far_busier_cache_holder()
    {
        var index = IndexWith("a", 50);
        var options = new KvAwareOptions { QueuedPrefillWeight = 0, DecodeLoadWeight = 0, HotSpotAbsolute = 8, HotSpotRatio = 2 };
        var p = new KvAwarePolicy(index, options, new ScriptedRandom());

        var hot = p.Place(Prompt(50), [Worker("a", running: 20), Worker("b", running: 2)]);
        Assert.Equal("b", hot.Worker!.Id);
        Assert.True(hot.HotSpotAvoided);

        // 7 more requests than b is under the absolute threshold: the cache still wins.
        var warm = p.Place(Prompt(50), [Worker("a", running: 9), Worker("b", running: 2)]);
        Assert.Equal("a", warm.Worker!.Id);
        Assert.False(warm.HotSpotAvoided);
    }

    [Fact]
    public void Equal_costs_are_broken_by_fewer_requests_then_by_the_random_draw()
    {
        var p = new KvAwarePolicy(new PrefixIndex(), new KvAwareOptions { DecodeLoadWeight = 0 }, new ScriptedRandom(0, 1));
        Assert.Equal("b", p.Place(Prompt(2), [Worker("a", running: 2), Worker("b", running: 1)]).Worker!.Id);
        // Reservoir draw over a, b: the second draw (1 of 2 → index 1 ≠ 0) keeps a; the first (0) switches to b.
        var first = p.Place(Prompt(2), [Worker("a"), Worker("b")]).Worker!.Id;
        var second = p.Place(Prompt(2), [Worker("a"), Worker("b")]).Worker!.Id;
        Assert.Equal(["b", "a"], new[] { first, second });
    }

    [Fact]
    public void A_new_prefix_goes_to_the_worker_holding_fewer_blocks_when_costs_and_loads_tie()
    {
        // a holds blocks of some other prefix (ids 1..6); the request's blocks (100..) are on nobody.
        var index = IndexWith("a", 6);
        var p = new KvAwarePolicy(index, new KvAwareOptions { DecodeLoadWeight = 0 }, new ScriptedRandom(0, 0, 0, 0));
        var fresh = new PlacementRequest([100, 101, 102], 3 * BlockSize + 5, BlockSize, null);
        for (int i = 0; i < 4; i++) Assert.Equal("b", p.Place(fresh, [Worker("a"), Worker("b")]).Worker!.Id);
    }

    [Fact]
    public void Session_affinity_is_stable_and_moves_only_the_departed_workers_sessions()
    {
        var p = new KvAwarePolicy(new PrefixIndex(), new KvAwareOptions(), new ScriptedRandom());
        var all = new[] { Worker("w1"), Worker("w2"), Worker("w3"), Worker("w4") };
        var sessions = Enumerable.Range(0, 200).Select(i => "session-" + i).ToArray();
        var before = sessions.ToDictionary(s => s, s => p.Place(Prompt(1, s), all).Worker!.Id);

        Assert.All(sessions, s => Assert.Equal(before[s], p.Place(Prompt(1, s), all).Worker!.Id));
        Assert.Equal(PlacementReason.SessionAffinity, p.Place(Prompt(1, "x"), all).Reason);
        Assert.True(before.Values.Distinct().Count() == 4, "sessions spread over every worker");

        var without3 = all.Where(w => w.Id != "w3").ToArray();
        foreach (var s in sessions)
        {
            var after = p.Place(Prompt(1, s), without3).Worker!.Id;
            if (before[s] != "w3") Assert.Equal(before[s], after);
        }
    }

    [Fact]
    public void A_hot_affinity_target_falls_back_to_cost()
    {
        var p = new KvAwarePolicy(new PrefixIndex(), new KvAwareOptions { DecodeLoadWeight = 0 }, new ScriptedRandom());
        var a = Worker("a");
        var b = Worker("b");
        var target = KvAwarePolicy.RendezvousPick("s", [a, b]);
        target.ReportLoad(new WorkerLoad(30, 0, 0, 0, 100));
        var r = p.Place(Prompt(1, "s"), [a, b]);
        Assert.NotEqual(target.Id, r.Worker!.Id);
        Assert.Equal(PlacementReason.LowestCost, r.Reason);
    }

    [Fact]
    public void Options_validation_names_the_setting_and_the_fix()
    {
        var errors = new PlacementOptions { Policy = "fastest", KvAware = new KvAwareOptions { HostCredit = 1.5, QueuedPrefillWeight = double.NaN } }
            .Validate().ToList();
        Assert.Equal(3, errors.Count);
        Assert.Contains(errors, e => e.Contains("Router:Placement:Policy is 'fastest'", StringComparison.Ordinal) && e.Contains("kv-aware", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("HostCredit", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("QueuedPrefillWeight", StringComparison.Ordinal));
        Assert.Empty(new PlacementOptions().Validate());
        foreach (var name in PlacementPolicies.Names)
            Assert.Equal(name, PlacementPolicies.Create(new PlacementOptions { Policy = name }, new PrefixIndex(), new ScriptedRandom()).Name);
    }

    [Fact]
    public void Pool_snapshots_are_immutable_and_swapped_whole()
    {
        var pool = new WorkerPool();
        var a = Worker("a");
        Assert.True(pool.Add(Worker("b")));
        var before = pool.Current;
        Assert.True(pool.Add(a));
        Assert.False(pool.Add(Worker("a")));
        Assert.Single(before.Available);
        Assert.Equal(["a", "b"], pool.Current.Available.Select(w => w.Id));
        Assert.True(pool.Remove("b"));
        Assert.Equal(["a"], pool.Current.Available.Select(w => w.Id));
        Assert.True(pool.Current.Version > before.Version);

        var held = pool.Current;
        pool.Replace([Worker("z"), Worker("c"), Worker("c")]);
        Assert.Equal(["a"], held.Available.Select(w => w.Id)); // a reader's snapshot never changes under it
        Assert.Equal(["c", "z"], pool.Current.Available.Select(w => w.Id));
    }

    [Fact]
    public void Leases_count_in_flight_requests_and_pending_prefill_once()
    {
        var w = Worker("a");
        var lease = w.Lease(300);
        Assert.Equal(1, w.InFlightRequests);
        Assert.Equal(300, w.InFlightPrefillTokens);
        lease.PrefillDone();
        lease.PrefillDone();
        Assert.Equal(0, w.InFlightPrefillTokens);
        lease.Dispose();
        lease.Dispose();
        Assert.Equal(0, w.InFlightRequests);
        Assert.Equal(0, w.InFlightPrefillTokens);
    }
}
