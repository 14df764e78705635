// One configured worker: its gRPC channel and client, its runtime state for
// placement, and what it said in GetInfo (its circuit breaker is the
// forwarder's, see Forwarding/WorkerBreakers). Channels raise
// the message size limits (long prompts) and keep HTTP/2 connections alive so a
// dead peer is noticed between requests.
using Grpc.Net.Client;
using Platform.Core.Protos;
using Platform.Router.Policies;

namespace Platform.Router.Workers;

public sealed class WorkerConnection : IDisposable
{
    private WorkerInfo? _info;

    public WorkerConnection(Uri address, int maxMessageBytes)
    {
        ArgumentNullException.ThrowIfNull(address);
        Address = address;
        State = new WorkerState(address.GetLeftPart(UriPartial.Authority));
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(10),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        };
        Channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            MaxReceiveMessageSize = maxMessageBytes,
            MaxSendMessageSize = maxMessageBytes,
        });
        Client = new Inference.InferenceClient(Channel);
    }

    public Uri Address { get; }
    public WorkerState State { get; }
    public GrpcChannel Channel { get; }
    public Inference.InferenceClient Client { get; }

    /// <summary>The worker's last GetInfo answer; null until it answered (or after it went away).</summary>
    public WorkerInfo? Info
    {
        get => Volatile.Read(ref _info);
        set => Volatile.Write(ref _info, value);
    }

    public void Dispose() => Channel.Dispose();
}
