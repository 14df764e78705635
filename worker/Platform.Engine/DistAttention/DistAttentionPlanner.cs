// Decides where a sequence too long for this worker keeps its KV: the first
// LocalTokens positions here, the rest reserved on peers. Peers are asked what
// they can lend (a Reserve probe answers from the creditor's own accounting:
// free blocks minus what it keeps for its own work); the ones with the most to
// lend are used first, at most MaxPeers of them. Either the whole remainder is
// reserved, or nothing is (what was taken is handed back) and the request is
// refused at once with how much was needed and how much could be found.
// When a creditor fails mid-sequence, ReserveSegmentAsync finds another peer
// for its positions, under the same fingerprint and lease rules.
using Grpc.Core;
using Platform.Core.Protos;

namespace Platform.Engine.DistAttention;

/// <summary>A peer worker that may lend KV memory.</summary>
public sealed record KvPeerEndpoint(string Name, KvPeer.KvPeerClient Client);

public sealed class DistAttentionPlanner(Func<IReadOnlyList<KvPeerEndpoint>> peers, int maxPeers, int leaseMs, TimeSpan callTimeout, TimeSpan attendTimeout)
{
    /// <summary>Reserves positions [localTokens, totalTokens) of the sequence on peers; throws <see cref="DistAttentionRefusedException"/> when they cannot hold them.</summary>
    public async Task<DistSequence> PlanAsync(string sequenceId, string fingerprint, int localTokens, int totalTokens, int blockSize, CancellationToken cancellationToken)
    {
        int remote = totalTokens - localTokens;
        var candidates = peers();
        if (candidates.Count == 0)
            throw new DistAttentionRefusedException($"the sequence needs {totalTokens} tokens of KV cache but this worker holds {localTokens} for one sequence and has no DistAttention peers; shorten the prompt or max_tokens, or add workers.");

        var probes = await Task.WhenAll(candidates.Select(p => ProbeAsync(p, fingerprint, cancellationToken))).ConfigureAwait(false);
        var ranked = probes.Where(p => p.Lendable >= blockSize).OrderByDescending(p => p.Lendable).Take(maxPeers).ToList();
        var segments = new List<RemoteSegment>();
        long start = localTokens;
        try
        {
            foreach (var (peer, canLend, _) in ranked)
            {
                if (remote <= 0) break;
                int take = Math.Min(remote, canLend / blockSize * blockSize);
                var reply = await ReserveOnAsync(peer, sequenceId, fingerprint, start, take, cancellationToken).ConfigureAwait(false);
                if (!reply.Granted) continue;   // its memory went elsewhere since the probe: try the next one
                segments.Add(new RemoteSegment(peer.Name, peer.Client, reply.ReservationId, start, take));
                start += take;
                remote -= take;
            }
        }
        catch (RpcException)
        {
            // A peer failed mid-plan: what was reserved is handed back below, the peers left out get no say.
        }
        var sequence = new DistSequence(sequenceId, localTokens, segments, leaseMs, attendTimeout);
        if (remote <= 0) return sequence;

        sequence.Release();
        int lendable = probes.Sum(p => p.Lendable);
        string refusals = string.Join("; ", probes.Where(p => p.Reason is not null).Select(p => $"{p.Peer.Name}: {p.Reason}"));
        throw new DistAttentionRefusedException(
            $"the sequence needs {totalTokens} tokens of KV cache; this worker holds {localTokens} for one sequence and its {candidates.Count} DistAttention peer(s) can lend {lendable}"
            + (refusals.Length > 0 ? $" ({refusals})" : "") + "; shorten the prompt or max_tokens, or give the workers more KV memory.");
    }

    /// <summary>
    /// Reserves positions [start, start + tokens) of a running sequence on one peer not in <paramref name="excludedPeers"/>
    /// (the creditor that held them failed): of the peers that can lend that much, the one with the most to lend.
    /// A peer already holding another segment of the sequence may take it: every reservation has its own id and
    /// attention stream. Throws <see cref="DistAttentionRefusedException"/> saying what each peer could lend when none can.
    /// </summary>
    public async Task<RemoteSegment> ReserveSegmentAsync(string sequenceId, string fingerprint, long start, int tokens, IReadOnlySet<string> excludedPeers,
        CancellationToken cancellationToken)
    {
        var candidates = peers().Where(p => !excludedPeers.Contains(p.Name)).ToList();
        var probes = await Task.WhenAll(candidates.Select(p => ProbeAsync(p, fingerprint, cancellationToken))).ConfigureAwait(false);
        var refusals = new List<string>();
        foreach (var (peer, canLend, reason) in probes.OrderByDescending(p => p.Lendable))
        {
            if (canLend < tokens)
            {
                refusals.Add($"{peer.Name} can lend {canLend}" + (reason is null ? "" : $" ({reason})"));
                continue;
            }
            try
            {
                var reply = await ReserveOnAsync(peer, sequenceId, fingerprint, start, tokens, cancellationToken).ConfigureAwait(false);
                if (reply.Granted) return new RemoteSegment(peer.Name, peer.Client, reply.ReservationId, start, tokens);
                refusals.Add($"{peer.Name}: {reply.Reason}");   // its memory went elsewhere since the probe
            }
            catch (RpcException e)
            {
                refusals.Add($"{peer.Name}: unreachable ({e.StatusCode})");
            }
        }
        throw new DistAttentionRefusedException($"no other DistAttention peer can hold positions {start}..{start + tokens - 1} ({tokens} tokens): "
            + (refusals.Count == 0 ? "there is none" : string.Join("; ", refusals)));
    }

    private async Task<ReserveReply> ReserveOnAsync(KvPeerEndpoint peer, string sequenceId, string fingerprint, long start, int tokens, CancellationToken cancellationToken) =>
        await peer.Client.ReserveAsync(new ReserveRequest
        {
            SequenceId = sequenceId, StartPosition = start, Tokens = tokens, LeaseMs = leaseMs, Fingerprint = fingerprint,
        }, deadline: DateTime.UtcNow.Add(callTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);

    private async Task<(KvPeerEndpoint Peer, int Lendable, string? Reason)> ProbeAsync(KvPeerEndpoint peer, string fingerprint, CancellationToken cancellationToken)
    {
        try
        {
            var reply = await peer.Client.ReserveAsync(new ReserveRequest { Tokens = 0, LeaseMs = leaseMs, Fingerprint = fingerprint },
                deadline: DateTime.UtcNow.Add(callTimeout), cancellationToken: cancellationToken).ConfigureAwait(false);
            return (peer, reply.LendableTokens, reply.Reason == "probe" ? null : reply.Reason);
        }
        catch (RpcException e)
        {
            return (peer, 0, $"unreachable ({e.StatusCode})");
        }
    }
}
