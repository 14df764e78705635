// A started generation on one worker: the first chunk (already received, so the
// request can no longer move to another worker) and the rest of the stream.
// Reading never throws for expected trouble: a broken stream, a worker error
// chunk, an aborted generation (FINISH_REASON_ABORT: the output is truncated, so
// it must not reach the client as a normal finish) or an inactivity timeout come
// (progress chunks, sent while a preempted request recomputes, count as activity)
// back as an error value, and the caller turns that into a clean SSE error event
// or a 503. Disposing cancels the worker call
// (client disconnect → the engine aborts the request and frees its blocks).
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Router.Policies;

namespace Platform.Router.Forwarding;

/// <summary>A chunk, the end (neither), or an error; with <see cref="ForwarderError.Aborted"/> the chunk may
/// carry the last text the worker produced, to be sent before the error.</summary>
public readonly record struct StreamRead(GenerateChunk? Chunk, ForwarderError Error, string Message)
{
    public bool IsEnd => Chunk is null && Error == ForwarderError.None;
}

public sealed class WorkerStream : IDisposable
{
    private readonly AsyncServerStreamingCall<GenerateChunk> _call;
    private readonly WorkerLease _lease;
    private readonly CancellationTokenSource _timeout;
    private readonly CancellationTokenSource _linked;
    private readonly CancellationToken _clientAborted;
    private readonly TimeSpan _inactivity;
    private bool _firstTaken;
    private bool _finished;

    internal WorkerStream(AsyncServerStreamingCall<GenerateChunk> call, WorkerLease lease, CancellationTokenSource timeout,
        CancellationTokenSource linked, TimeSpan inactivity, GenerateChunk first, int overlapBlocks, CancellationToken clientAborted)
    {
        _call = call;
        _lease = lease;
        _timeout = timeout;
        _linked = linked;
        _clientAborted = clientAborted;
        _inactivity = inactivity;
        First = first;
        OverlapBlocks = overlapBlocks;
    }

    public string WorkerId => _lease.Worker.Id;
    public GenerateChunk First { get; }
    public int OverlapBlocks { get; }

    /// <summary>The next chunk (the first one first), the end, or an error.</summary>
    public async Task<StreamRead> ReadAsync()
    {
        if (!_firstTaken)
        {
            _firstTaken = true;
            return Inspect(First);
        }
        if (_finished) return default;
        try
        {
            while (true)
            {
                _timeout.CancelAfter(_inactivity);
                if (!await _call.ResponseStream.MoveNext(CancellationToken.None).ConfigureAwait(false))
                {
                    _finished = true;
                    return new StreamRead(null, ForwarderError.WorkerFailed, "the worker ended the stream without a finish reason");
                }
                // Progress after the first token (a preempted request recomputing its KV): activity, nothing to send.
                if (!GenerationForwarder.IsProgress(_call.ResponseStream.Current)) return Inspect(_call.ResponseStream.Current);
            }
        }
        catch (RpcException e)
        {
            _finished = true;
            if (_clientAborted.IsCancellationRequested) return new StreamRead(null, ForwarderError.Canceled, "client disconnected");
            if (_timeout.IsCancellationRequested)
                return new StreamRead(null, ForwarderError.Timeout, $"worker {WorkerId} sent nothing for {_inactivity.TotalSeconds:0.#} s");
            return new StreamRead(null, ForwarderErrors.FromStatus(e.StatusCode), $"worker {WorkerId} failed mid-stream: {e.Status.Detail}");
        }
    }

    /// <summary>The client-facing message of an aborted generation.</summary>
    public static string AbortMessage(string workerId, GenerateChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        return $"worker {workerId} aborted the generation before it finished" + (string.IsNullOrEmpty(chunk.Error) ? "; retry the request." : $": {chunk.Error}");
    }

    private StreamRead Inspect(GenerateChunk chunk)
    {
        if (chunk.FinishReason == FinishReason.Error)
        {
            _finished = true;
            return new StreamRead(null, ForwarderError.WorkerFailed, string.IsNullOrEmpty(chunk.Error) ? $"worker {WorkerId} failed the request" : chunk.Error);
        }
        if (chunk.FinishReason == FinishReason.Abort)
        {
            // Truncated output: an error, never finish_reason "stop". Text it still carries goes out before the error.
            _finished = true;
            return new StreamRead(chunk.Text.Length > 0 ? chunk : null, ForwarderError.Aborted, AbortMessage(WorkerId, chunk));
        }
        if (chunk.FinishReason != FinishReason.Unspecified) _finished = true;
        return new StreamRead(chunk, ForwarderError.None, "");
    }

    public void Dispose()
    {
        _call.Dispose();
        _linked.Dispose();
        _timeout.Dispose();
        _lease.Dispose();
    }
}
