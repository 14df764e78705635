// The debtor side of one borrowed sequence: positions [0, LocalTokens) keep
// their KV in this worker's pool; the positions after them are split into
// segments, each reserved on one creditor. Per layer of a step that computes
// positions at or after LocalTokens, Attend sends each creditor the new tokens'
// K/V that belong to its segment and the queries, and collects the partial
// outputs and log-sum-exps to merge with the local part. One bidirectional
// stream per creditor carries every layer of every step, so a layer does not
// pay for a new call. A lease keeps the reservations alive while the sequence
// runs; Release returns them (and a dead debtor's simply expire). When a
// creditor fails, the engine reserves its positions on another peer and swaps
// the segment in with ReplaceSegment (the engine then rebuilds their KV).
using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Platform.Core.Protos;

namespace Platform.Engine.DistAttention;

/// <summary>
/// A creditor could not serve its part of a sequence. <see cref="FailedSegments"/> are the segments whose creditor
/// failed (empty when unknown); the engine re-plans them, or ends the sequence with this message.
/// </summary>
public sealed class RemoteKvException(string message, Exception? inner = null, IReadOnlyList<RemoteSegment>? failedSegments = null) : Exception(message, inner)
{
    public IReadOnlyList<RemoteSegment> FailedSegments { get; } = failedSegments ?? [];
}

/// <summary>Positions [Start, Start + Tokens) of a sequence, held by one creditor.</summary>
public sealed class RemoteSegment(string peer, KvPeer.KvPeerClient client, string reservationId, long start, int tokens)
{
    public string Peer { get; } = peer;
    public KvPeer.KvPeerClient Client { get; } = client;
    public string ReservationId { get; } = reservationId;
    public long Start { get; } = start;
    public int Tokens { get; } = tokens;
    internal AsyncDuplexStreamingCall<AttendRequest, AttendReply>? Stream { get; set; }
}

/// <summary>A layer's requests in flight to the creditors.</summary>
public sealed class PendingAttend(int layer, long startedAt)
{
    public int Layer { get; } = layer;
    public long StartedAt { get; } = startedAt;
    internal List<(RemoteSegment Segment, Task<AttendReply> Reply)> Replies { get; } = [];
}

public sealed class DistSequence : IDisposable
{
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "Cancelled in Release, not disposed: a renewal or attend call still in flight reads its token.")]
    private readonly CancellationTokenSource _lifetime = new();
    private readonly TimeSpan _attendTimeout;
    private readonly int _leaseMs;
    private readonly ITimer _renewal;
    private int _released;
    private volatile RemoteSegment[] _segments;

    public DistSequence(string sequenceId, int localTokens, IReadOnlyList<RemoteSegment> segments, int leaseMs, TimeSpan attendTimeout, TimeProvider? time = null)
    {
        SequenceId = sequenceId;
        LocalTokens = localTokens;
        _segments = [.. segments];
        _leaseMs = leaseMs;
        _attendTimeout = attendTimeout;
        var period = TimeSpan.FromMilliseconds(Math.Max(50, leaseMs / 3));
        _renewal = (time ?? TimeProvider.System).CreateTimer(_ => Renew(), null, period, period);
    }

    public string SequenceId { get; }
    /// <summary>Positions below this keep their KV locally; the rest live in <see cref="Segments"/>.</summary>
    public int LocalTokens { get; }
    /// <summary>The creditors' segments, in position order and contiguous from <see cref="LocalTokens"/>.</summary>
    public IReadOnlyList<RemoteSegment> Segments => _segments;
    public int RemoteTokens => Segments.Sum(s => s.Tokens);
    /// <summary>Time from sending a layer to the creditors to having their answers (all layers, all steps).</summary>
    public TimeSpan RemoteAttentionTime { get; private set; }

    /// <summary>
    /// One layer, first half: sends the K/V of <paramref name="kvPositions"/> to the creditors holding them and
    /// the queries to every creditor whose positions some query can see: none beyond the last query, and (in a
    /// sliding-window layer) none wholly below <paramref name="firstVisibleKey"/>, the lowest position any query's
    /// window reaches, unless it must store new K/V. The caller computes its local part meanwhile and collects
    /// the creditors' partials with <see cref="EndAttend"/>.
    /// </summary>
    public PendingAttend BeginAttend(int layer, long[] kvPositions, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int kvRow,
        long[] queryPositions, ReadOnlySpan<float> queries, long firstVisibleKey = 0)
    {
        long lastQuery = queryPositions.Length == 0 ? -1 : queryPositions.Max();
        var pending = new PendingAttend(layer, System.Diagnostics.Stopwatch.GetTimestamp());
        ByteString? queryBytes = null;
        foreach (var segment in Segments)
        {
            if (segment.Start > lastQuery) break;   // nobody sees these positions yet
            var request = new AttendRequest { ReservationId = segment.ReservationId, Layer = layer };
            int first = -1, count = 0;
            for (int i = 0; i < kvPositions.Length; i++)
            {
                if (kvPositions[i] < segment.Start || kvPositions[i] >= segment.Start + segment.Tokens) continue;
                if (first < 0) first = i;
                request.KvPositions.Add(kvPositions[i]);
                count++;
            }
            // Wholly outside every query's window and nothing to store: its partial would be empty.
            if (count == 0 && segment.Start + segment.Tokens <= firstVisibleKey) continue;
            if (count > 0)
            {
                // Positions are consecutive, so a segment's rows are one contiguous slice.
                request.Keys = ByteString.CopyFrom(MemoryMarshal.AsBytes(keys.Slice(first * kvRow, count * kvRow)));
                request.Values = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.Slice(first * kvRow, count * kvRow)));
            }
            request.QueryPositions.AddRange(queryPositions);
            request.Queries = queryBytes ??= ByteString.CopyFrom(MemoryMarshal.AsBytes(queries));
            pending.Replies.Add((segment, ExchangeAsync(segment, request)));
        }
        return pending;
    }

    /// <summary>
    /// One layer, second half: adds every contacted creditor's partial output [rows, heads, headDim] and
    /// log-sum-exp [rows, heads] to the lists. Throws <see cref="RemoteKvException"/> naming the failed segments
    /// when a creditor failed, after every other reply of the layer arrived (or failed too): a stream is written
    /// again only once its previous answer has been read, so the surviving creditors can serve a retry.
    /// </summary>
    public void EndAttend(PendingAttend pending, List<float[]> outputs, List<float[]> logSumExps)
    {
        try
        {
            List<RemoteSegment>? failed = null;
            RemoteKvException? first = null;
            foreach (var (segment, reply) in pending.Replies)
            {
                AttendReply r;
                try
                {
                    r = reply.GetAwaiter().GetResult();
                }
                catch (Exception e) when (e is RemoteKvException or RpcException or OperationCanceledException or InvalidOperationException or IOException)
                {
                    (failed ??= []).Add(segment);
                    first ??= new RemoteKvException($"KV peer {segment.Peer} stopped serving this sequence's positions {segment.Start}..{segment.Start + segment.Tokens - 1}: {Describe(e)}", e);
                    continue;
                }
                if (r.Error.Length > 0)
                {
                    (failed ??= []).Add(segment);
                    first ??= new RemoteKvException($"KV peer {segment.Peer} refused layer {pending.Layer} for this sequence's positions {segment.Start}..{segment.Start + segment.Tokens - 1}: {r.Error}");
                    continue;
                }
                outputs.Add(MemoryMarshal.Cast<byte, float>(r.Outputs.Span).ToArray());
                logSumExps.Add(MemoryMarshal.Cast<byte, float>(r.LogSumExps.Span).ToArray());
            }
            if (first is not null) throw new RemoteKvException(first.Message, first.InnerException, failed);
        }
        finally
        {
            RemoteAttentionTime += System.Diagnostics.Stopwatch.GetElapsedTime(pending.StartedAt);
        }
    }

    /// <summary>
    /// Puts <paramref name="replacement"/>, the same positions reserved on another creditor, in the place of
    /// <paramref name="lost"/>, whose reservation is handed back in the background (on a dead creditor it
    /// simply expires). The replacement holds no K/V yet: the caller recomputes what was already written.
    /// </summary>
    public void ReplaceSegment(RemoteSegment lost, RemoteSegment replacement)
    {
        if (replacement.Start != lost.Start || replacement.Tokens != lost.Tokens)
            throw new ArgumentException($"the replacement holds positions {replacement.Start}+{replacement.Tokens}, the lost segment {lost.Start}+{lost.Tokens}", nameof(replacement));
        var segments = _segments;
        int index = Array.IndexOf(segments, lost);
        if (index < 0) throw new ArgumentException($"positions {lost.Start}+{lost.Tokens} on {lost.Peer} are not a segment of sequence {SequenceId}", nameof(lost));
        var updated = (RemoteSegment[])segments.Clone();
        updated[index] = replacement;
        _segments = updated;
        ReleaseReservation(lost);
    }

    private async Task<AttendReply> ExchangeAsync(RemoteSegment segment, AttendRequest request)
    {
        segment.Stream ??= segment.Client.Attend(cancellationToken: _lifetime.Token);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_lifetime.Token);
        timeout.CancelAfter(_attendTimeout);
        try
        {
            await segment.Stream.RequestStream.WriteAsync(request, timeout.Token).ConfigureAwait(false);
            if (!await segment.Stream.ResponseStream.MoveNext(timeout.Token).ConfigureAwait(false))
                throw new RemoteKvException($"KV peer {segment.Peer} closed the attention stream");
            return segment.Stream.ResponseStream.Current;
        }
        catch (OperationCanceledException) when (!_lifetime.IsCancellationRequested)
        {
            throw new RemoteKvException($"KV peer {segment.Peer} did not answer layer {request.Layer} within {_attendTimeout.TotalMilliseconds:0} ms");
        }
    }

    private static string Describe(Exception e) => e switch
    {
        RemoteKvException r => r.Message,
        RpcException r => $"{r.StatusCode}: {r.Status.Detail}",
        _ => e.Message,
    };

    private void Renew()
    {
        if (Volatile.Read(ref _released) != 0) return;
        try
        {
            foreach (var s in _segments)
                _ = s.Client.RenewAsync(new RenewRequest { ReservationId = s.ReservationId, LeaseMs = _leaseMs },
                deadline: DateTime.UtcNow.AddMilliseconds(_leaseMs / 2.0), cancellationToken: _lifetime.Token).ResponseAsync
                    .ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
        }
        catch (ObjectDisposedException)
        {
            // Released meanwhile.
        }
    }

    /// <summary>Returns every reservation (in the background: a dead creditor's lease simply expires).</summary>
    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        _renewal.Dispose();
        foreach (var s in _segments) ReleaseReservation(s);
        _lifetime.Cancel();
    }

    private static void ReleaseReservation(RemoteSegment segment)
    {
        segment.Stream?.Dispose();
        _ = segment.Client.ReleaseAsync(new ReleaseRequest { ReservationId = segment.ReservationId }, deadline: DateTime.UtcNow.AddSeconds(5)).ResponseAsync
            .ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
    }

    // The token source is cancelled, not disposed: a renewal already in flight may still read it.
    public void Dispose() => Release();
}
