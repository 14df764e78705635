// The creditor side of DistAttention: lends KV blocks of this worker's pool to
// a peer's sequence and serves attention over them.
//
// Reserve takes blocks from the engine's pool on the engine thread, so the
// scheduler sees them as used, and only what this worker does not need: it
// always keeps LendReserveFraction of its pool for its own requests, plus the
// blocks its waiting requests still need. A reservation lives under a lease;
// the debtor renews it while its sequence runs, and a reaper returns the blocks
// of any reservation whose lease ran out (a debtor that died).
//
// Attend runs on the caller's (gRPC) thread: it writes the new tokens' K/V into
// the reservation's slots and computes, for every query, attention over the
// reservation's positions up to the query's own (causal; in a sliding-window
// layer only those inside the query's window), with the log-sum-exp
// the debtor needs for the exact merge. The engine thread never touches lent
// blocks, so the two never write the same memory. K/V, queries and partials
// travel as float32 whatever the compute dtype; the lent blocks hold the
// engine's own dtype (bfloat16/float16 rows are widened for the float32 kernel).
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Platform.Core.Protos;
using Platform.Engine.Kernels;
using Platform.Engine.KvCache;

namespace Platform.Engine.DistAttention;

public sealed class KvLender : IDisposable
{
    private readonly IKvLendingPool _engine;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Reservation> _reservations = new(StringComparer.Ordinal);
    private readonly ITimer _reaper;
    private int _lentBlocks;

    public KvLender(IKvLendingPool engine, TimeProvider? time = null)
    {
        _engine = engine;
        _time = time ?? TimeProvider.System;
        _reaper = _time.CreateTimer(_ => ReapExpired(), null, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(250));
    }

    /// <summary>Blocks currently lent to peers.</summary>
    public int LentBlocks => Volatile.Read(ref _lentBlocks);
    public int Reservations => _reservations.Count;
    /// <summary>Time spent serving attention for peers (writing their K/V and computing partials).</summary>
    public TimeSpan AttendTime => TimeSpan.FromTicks(Interlocked.Read(ref _attendTicks));
    public long AttendCalls => Interlocked.Read(ref _attendCalls);

    private long _attendTicks, _attendCalls;

    /// <summary>Reserves blocks for <c>tokens</c> positions; tokens = 0 only asks how much could be lent.</summary>
    public async Task<ReserveReply> ReserveAsync(ReserveRequest request)
    {
        if (!_engine.LendsKvBlocks) return Refuse("this worker does not lend KV memory (DistAttention is off)", 0);
        if (request.Fingerprint != _engine.FingerprintId)
            return Refuse($"this worker serves model {_engine.FingerprintId}, not {request.Fingerprint}", 0);
        if (request.Tokens < 0 || request.StartPosition < 0 || request.LeaseMs <= 0)
            return Refuse("tokens and start_position must not be negative and lease_ms must be positive", 0);
        int blocks = _engine.KvBlocksFor(request.Tokens);
        var lent = await _engine.LendBlocksAsync(request.Tokens == 0 ? 0 : blocks).ConfigureAwait(false);
        int lendableTokens = lent.LendableBlocks * _engine.BlockSize;
        if (request.Tokens == 0) return new ReserveReply { Granted = false, Reason = "probe", LendableTokens = lendableTokens };
        if (lent.Blocks is null)
            return Refuse($"asked for {request.Tokens} tokens but this worker can lend {lendableTokens}", lendableTokens);

        var reservation = new Reservation(Guid.NewGuid().ToString("n"), request.SequenceId, request.StartPosition, request.Tokens,
            lent.Blocks, _engine.BlockSize, _time.GetUtcNow().AddMilliseconds(request.LeaseMs));
        _reservations[reservation.Id] = reservation;
        Interlocked.Add(ref _lentBlocks, lent.Blocks.Length);
        return new ReserveReply { Granted = true, ReservationId = reservation.Id, LendableTokens = lendableTokens };
    }

    public bool Renew(string reservationId, int leaseMs)
    {
        if (!_reservations.TryGetValue(reservationId, out var r)) return false;
        lock (r) r.ExpiresAt = _time.GetUtcNow().AddMilliseconds(Math.Max(1, leaseMs));
        return true;
    }

    public bool Release(string reservationId)
    {
        if (!_reservations.TryRemove(reservationId, out var r)) return false;
        ReturnBlocks(r);
        return true;
    }

    /// <summary>Serves one layer of one step of a borrowed sequence; errors come back in the reply, not as exceptions.</summary>
    public unsafe AttendReply Attend(AttendRequest request)
    {
        if (!_reservations.TryGetValue(request.ReservationId, out var r))
            return new AttendReply { Error = $"reservation {request.ReservationId} is unknown here (released, expired, or this worker restarted)" };
        var c = _engine.Config;
        int kvRow = c.NumKvHeads * c.HeadDim, qRow = c.NumHeads * c.HeadDim;
        int newKv = request.KvPositions.Count, queries = request.QueryPositions.Count;
        if (request.Layer < 0 || request.Layer >= c.NumLayers) return new AttendReply { Error = $"layer {request.Layer} is outside [0, {c.NumLayers})" };
        if (request.Keys.Length != newKv * kvRow * 4 || request.Values.Length != newKv * kvRow * 4)
            return new AttendReply { Error = $"keys and values must hold {newKv}×{c.NumKvHeads}×{c.HeadDim} float32 values (DistAttention sends float32 whatever the compute dtype)" };
        if (request.Queries.Length != queries * qRow * 4)
            return new AttendReply { Error = $"queries must hold {queries}×{c.NumHeads}×{c.HeadDim} float32 values" };

        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            lock (r) return AttendLocked(request, r, c, kvRow, qRow, newKv, queries);
        }
        finally
        {
            Interlocked.Add(ref _attendTicks, System.Diagnostics.Stopwatch.GetElapsedTime(started).Ticks);
            Interlocked.Increment(ref _attendCalls);
        }
    }

    private unsafe AttendReply AttendLocked(AttendRequest request, Reservation r, Core.Models.ModelConfig c, int kvRow, int qRow, int newKv, int queries)
    {
        {
            if (r.Released) return new AttendReply { Error = $"reservation {r.Id} was released" };
            var keys = MemoryMarshal.Cast<byte, float>(request.Keys.Span);
            var values = MemoryMarshal.Cast<byte, float>(request.Values.Span);
            for (int i = 0; i < newKv; i++)
            {
                long index = request.KvPositions[i] - r.Start;
                if (index < 0 || index >= r.Tokens)
                    return new AttendReply { Error = $"position {request.KvPositions[i]} is outside this reservation [{r.Start}, {r.Start + r.Tokens})" };
                // Rounded to the pool's dtype: exact, since the debtor (same fingerprint, so same dtype) widened them from it.
                _engine.WriteLentKv(request.Layer, r.Slots.AsSpan((int)index, 1), keys.Slice(i * kvRow, kvRow), values.Slice(i * kvRow, kvRow));
                r.Written = Math.Max(r.Written, (int)index + 1);
            }

            // Each query sees the positions of its window (all of them, with full attention) up to its own.
            var window = c.WindowOf(request.Layer);
            var lengths = new int[queries];
            var offsets = new int[queries];
            for (int i = 0; i < queries; i++)
            {
                long query = request.QueryPositions[i];
                int end = (int)Math.Clamp(query - r.Start + 1, 0, r.Written);
                offsets[i] = (int)Math.Clamp(window.FirstVisibleKey(query) - r.Start, 0, end);
                lengths[i] = end - offsets[i];
            }
            var output = new float[queries * qRow];
            var logSumExp = new float[queries * c.NumHeads];
            var q = MemoryMarshal.Cast<byte, float>(request.Queries.Span);
            fixed (float* qp = q) fixed (long* slots = r.Slots) fixed (int* off = offsets) fixed (int* len = lengths)
            fixed (float* op = output) fixed (float* lp = logSumExp)
            {
                _engine.LentKvAttention(request.Layer, qp, slots, r.Written, off, len, queries,
                    c.NumHeads, c.NumKvHeads, c.HeadDim, (float)(1.0 / Math.Sqrt(c.HeadDim)), op, lp);
            }
            r.ExpiresAt = _time.GetUtcNow().AddMilliseconds(Math.Max(_engine.LeaseMs, 1));
            return new AttendReply
            {
                Outputs = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(output.AsSpan()).ToArray()),
                LogSumExps = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(logSumExp.AsSpan()).ToArray()),
            };
        }
    }

    private void ReapExpired()
    {
        var now = _time.GetUtcNow();
        foreach (var (id, r) in _reservations)
        {
            bool expired;
            lock (r) expired = r.ExpiresAt <= now;
            if (expired && _reservations.TryRemove(id, out _)) ReturnBlocks(r);
        }
    }

    private void ReturnBlocks(Reservation r)
    {
        lock (r)
        {
            if (r.Released) return;
            r.Released = true;
        }
        Interlocked.Add(ref _lentBlocks, -r.Blocks.Length);
        _engine.ReturnLentBlocks(r.Blocks);
    }

    private static ReserveReply Refuse(string reason, int lendableTokens) => new() { Granted = false, Reason = reason, LendableTokens = lendableTokens };

    public void Dispose()
    {
        _reaper.Dispose();
        foreach (var id in _reservations.Keys.ToList()) Release(id);
    }

    private sealed class Reservation
    {
        public Reservation(string id, string sequenceId, long start, int tokens, int[] blocks, int blockSize, DateTimeOffset expiresAt)
        {
            Id = id;
            SequenceId = sequenceId;
            Start = start;
            Tokens = tokens;
            Blocks = blocks;
            ExpiresAt = expiresAt;
            Slots = BlockTable.Slots(blocks, blockSize, tokens);
        }

        public string Id { get; }
        public string SequenceId { get; }
        public long Start { get; }
        public int Tokens { get; }
        public int[] Blocks { get; }
        public long[] Slots { get; }
        public DateTimeOffset ExpiresAt { get; set; }
        /// <summary>Positions [Start, Start + Written) hold K/V.</summary>
        public int Written { get; set; }
        public bool Released { get; set; }
    }
}
