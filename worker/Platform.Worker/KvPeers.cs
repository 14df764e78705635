// The peer workers this worker may borrow KV memory from (DistAttention), as
// gRPC clients over one channel each, with the message limits raised the same
// way as for the router (a layer of a prefill chunk can exceed gRPC's 4 MB).
// Locally the list is static (--peers, filled in by `platform up`); in a cluster
// the operator passes the StatefulSet's stable pod names.
using Grpc.Net.Client;
using Microsoft.Extensions.Options;
using Platform.Core.Protos;
using Platform.Engine;
using Platform.Engine.DistAttention;

namespace Platform.Worker;

public sealed class KvPeers : IDisposable
{
    private readonly List<GrpcChannel> _channels = [];
    private readonly List<KvPeerEndpoint> _endpoints = [];

    public KvPeers(IOptions<WorkerOptions> options)
    {
        int limit = options.Value.MaxMessageMegabytes * 1024 * 1024;
        string self = options.Value.ResolvedWorkerId;
        foreach (var address in options.Value.PeerAddresses)
        {
            // In a cluster every pod gets the same list of StatefulSet names: leave this pod out.
            if (Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.Host.Split('.')[0] == self) continue;
            var channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions { MaxReceiveMessageSize = limit, MaxSendMessageSize = limit });
            _channels.Add(channel);
            _endpoints.Add(new KvPeerEndpoint(address, new KvPeer.KvPeerClient(channel)));
        }
    }

    public IReadOnlyList<KvPeerEndpoint> Endpoints => _endpoints;

    public DistAttentionPlanner CreatePlanner(EngineOptions engine) => new(() => _endpoints, engine.DistMaxPeers, engine.DistLeaseMs,
        TimeSpan.FromSeconds(5), TimeSpan.FromMilliseconds(engine.DistAttendTimeoutMs));

    public void Dispose()
    {
        foreach (var c in _channels) c.Dispose();
    }
}
