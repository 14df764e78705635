// The KvPeer gRPC service (core/Platform.Core/Protos/kvpeer.proto): this worker
// as a DistAttention creditor. Reserve/Renew/Release map onto the KvLender;
// Attend is one bidirectional stream per borrowed sequence, answered message by
// message (one layer of one step each). A worker without DistAttention, or still
// loading, answers Unavailable so the debtor asks another peer.
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Engine.DistAttention;

namespace Platform.Worker;

internal sealed class KvPeerService(EngineHost engines) : KvPeer.KvPeerBase
{
    private KvLender RequireLender() => engines.Lender
        ?? throw new RpcException(new Status(StatusCode.Unavailable, engines.Engine is null
            ? "this worker is still loading its model; ask another peer."
            : "this worker does not lend KV memory (start it with --dist-attention on)."));

    public override Task<ReserveReply> Reserve(ReserveRequest request, ServerCallContext context) => RequireLender().ReserveAsync(request);

    public override Task<RenewReply> Renew(RenewRequest request, ServerCallContext context) =>
        Task.FromResult(new RenewReply { Known = RequireLender().Renew(request.ReservationId, request.LeaseMs) });

    public override Task<ReleaseReply> Release(ReleaseRequest request, ServerCallContext context) =>
        Task.FromResult(new ReleaseReply { Released = RequireLender().Release(request.ReservationId) });

    public override async Task Attend(IAsyncStreamReader<AttendRequest> requestStream, IServerStreamWriter<AttendReply> responseStream, ServerCallContext context)
    {
        var lender = RequireLender();
        while (await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
            await responseStream.WriteAsync(lender.Attend(requestStream.Current), context.CancellationToken).ConfigureAwait(false);
    }
}
