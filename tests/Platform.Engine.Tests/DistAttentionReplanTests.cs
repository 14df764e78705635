// The debtor's side of a DistAttention re-plan, against scripted KvPeer clients
// (no workers): the planner reserves a lost segment on a peer outside the failed
// ones, the one with the most to lend that can hold it all, and says what each
// could lend when none can; DistSequence swaps the segment in place, hands the
// lost reservation back once, and later releases the replacement, never the
// lost one again. The end-to-end recovery (a creditor killed mid-decode) is in
// Platform.Worker.Tests' DistAttentionTests.
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Engine.DistAttention;

namespace Platform.Engine.Tests;

public sealed class DistAttentionReplanTests
{
    private const string Fingerprint = "model-f32";

    [Fact]
    public async Task A_lost_segment_is_reserved_on_the_peer_with_most_to_lend_that_can_hold_it_never_on_an_excluded_one()
    {
        var dead = new ScriptedPeer("dead", lendableTokens: 1000);
        var tooSmall = new ScriptedPeer("too-small", lendableTokens: 48);
        var fits = new ScriptedPeer("fits", lendableTokens: 224);
        var roomier = new ScriptedPeer("roomier", lendableTokens: 320);
        var planner = Planner(dead, tooSmall, fits, roomier);

        var segment = await planner.ReserveSegmentAsync("seq", Fingerprint, 224, 224, new HashSet<string> { "dead" }, CancellationToken.None);

        Assert.Equal(("roomier", 224L, 224), (segment.Peer, segment.Start, segment.Tokens));
        Assert.Equal("roomier-1", segment.ReservationId);
        Assert.Empty(dead.Calls);
        Assert.Equal(["reserve seq 224+224"], roomier.Reservations);
        Assert.Empty(fits.Reservations);
        Assert.Empty(tooSmall.Reservations);
    }

    [Fact]
    public async Task When_no_other_peer_can_hold_a_lost_segment_the_refusal_says_what_each_could_lend()
    {
        var planner = Planner(new ScriptedPeer("dead", 1000), new ScriptedPeer("a", 48), new ScriptedPeer("b", 0));
        var refused = await Assert.ThrowsAsync<DistAttentionRefusedException>(() =>
            planner.ReserveSegmentAsync("seq", Fingerprint, 224, 156, new HashSet<string> { "dead" }, CancellationToken.None));
        Assert.Contains("no other DistAttention peer can hold positions 224..379 (156 tokens)", refused.Message, StringComparison.Ordinal);
        Assert.Contains("a can lend 48", refused.Message, StringComparison.Ordinal);
        Assert.Contains("b can lend 0", refused.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("dead", refused.Message, StringComparison.Ordinal);

        var alone = Planner(new ScriptedPeer("dead", 1000));
        var none = await Assert.ThrowsAsync<DistAttentionRefusedException>(() =>
            alone.ReserveSegmentAsync("seq", Fingerprint, 224, 156, new HashSet<string> { "dead" }, CancellationToken.None));
        Assert.EndsWith("there is none", none.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_replaced_segment_keeps_its_place_its_reservation_is_released_once_and_the_replacement_is_released_with_the_sequence()
    {
        var lostPeer = new ScriptedPeer("lost", 0);
        var otherPeer = new ScriptedPeer("other", 0);
        var sparePeer = new ScriptedPeer("spare", 0);
        var lost = new RemoteSegment("lost", lostPeer.Client, "lost-r", 224, 224);
        var other = new RemoteSegment("other", otherPeer.Client, "other-r", 448, 88);
        using var sequence = new DistSequence("seq", 224, [lost, other], leaseMs: 60_000, attendTimeout: TimeSpan.FromSeconds(1));

        var mismatched = new RemoteSegment("spare", sparePeer.Client, "bad", 224, 208);
        Assert.Throws<ArgumentException>(() => sequence.ReplaceSegment(lost, mismatched));
        var replacement = new RemoteSegment("spare", sparePeer.Client, "spare-r", 224, 224);
        sequence.ReplaceSegment(lost, replacement);

        Assert.Equal([replacement, other], sequence.Segments);
        Assert.Equal(312, sequence.RemoteTokens);
        Assert.Equal(["release lost-r"], lostPeer.Releases);
        Assert.Throws<ArgumentException>(() => sequence.ReplaceSegment(lost, replacement));

        sequence.Release();
        Assert.Equal(["release lost-r"], lostPeer.Releases);
        Assert.Equal(["release spare-r"], sparePeer.Releases);
        Assert.Equal(["release other-r"], otherPeer.Releases);
    }

    private static DistAttentionPlanner Planner(params ScriptedPeer[] peers) =>
        new(() => [.. peers.Select(p => new KvPeerEndpoint(p.Name, p.Client))], maxPeers: 4, leaseMs: 15_000,
            TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5));

    /// <summary>A KvPeer answering Reserve from a fixed amount of lendable tokens and recording every call.</summary>
    private sealed class ScriptedPeer(string name, int lendableTokens) : CallInvoker
    {
        private readonly Lock _gate = new();
        private int _granted;

        public string Name { get; } = name;
        public KvPeer.KvPeerClient Client => new(this);
        public List<string> Calls { get; } = [];
        public IEnumerable<string> Reservations => Snapshot().Where(c => c.StartsWith("reserve ", StringComparison.Ordinal));
        public IEnumerable<string> Releases => Snapshot().Where(c => c.StartsWith("release ", StringComparison.Ordinal));

        private List<string> Snapshot()
        {
            lock (_gate) return [.. Calls];
        }

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
        {
            object reply;
            lock (_gate)
            {
                switch (request)
                {
                    case ReserveRequest { Tokens: 0 }:
                        Calls.Add("probe");
                        reply = new ReserveReply { Granted = false, Reason = "probe", LendableTokens = lendableTokens };
                        break;
                    case ReserveRequest r when r.Tokens <= lendableTokens:
                        Calls.Add($"reserve {r.SequenceId} {r.StartPosition}+{r.Tokens}");
                        lendableTokens -= r.Tokens;
                        reply = new ReserveReply { Granted = true, ReservationId = $"{Name}-{++_granted}", LendableTokens = lendableTokens };
                        break;
                    case ReserveRequest r:
                        Calls.Add($"refused {r.Tokens}");
                        reply = new ReserveReply { Granted = false, Reason = $"can lend {lendableTokens}", LendableTokens = lendableTokens };
                        break;
                    case ReleaseRequest r:
                        Calls.Add($"release {r.ReservationId}");
                        reply = new ReleaseReply { Released = true };
                        break;
                    case RenewRequest:
                        reply = new RenewReply { Known = true };
                        break;
                    default:
                        throw new NotSupportedException($"{method.FullName} is not scripted");
                }
            }
            return new AsyncUnaryCall<TResponse>(Task.FromResult((TResponse)reply), Task.FromResult(new Metadata()),
                () => Status.DefaultSuccess, () => new Metadata(), () => { });
        }

        public override TResponse BlockingUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) =>
            throw new NotSupportedException();

        public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request) =>
            throw new NotSupportedException();

        public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options) =>
            throw new NotSupportedException();

        public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options) =>
            throw new NotSupportedException();
    }
}
