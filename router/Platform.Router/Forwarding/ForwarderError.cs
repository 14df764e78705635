// Expected failures of forwarding a request to a worker, as values (YARP's
// ForwarderError): each carries whether another worker might do better
// (retryable), whether it counts against the worker's circuit breaker, and
// the HTTP status the client finally sees.
using Grpc.Core;

namespace Platform.Router.Forwarding;

public enum ForwarderError
{
    None,
    /// <summary>No worker is in the pool (or every one was tried or has an open breaker).</summary>
    NoWorkers,
    /// <summary>The worker rejected the request as invalid (gRPC InvalidArgument/OutOfRange): a client error, never retried.</summary>
    Rejected,
    /// <summary>The worker is full (ResourceExhausted).</summary>
    Saturated,
    /// <summary>The worker is draining or not ready (FailedPrecondition).</summary>
    NotReady,
    /// <summary>Could not reach the worker, or its breaker is open.</summary>
    Unreachable,
    /// <summary>The worker went silent (no progress and no token) for longer than the inactivity bound.</summary>
    Timeout,
    /// <summary>The request's own deadline (x-request-timeout or Router:RequestTimeoutMs) passed: 504, never retried.</summary>
    DeadlineExceeded,
    /// <summary>The worker failed the request (Internal, Unknown, an engine error, a broken stream).</summary>
    WorkerFailed,
    /// <summary>The client went away; nothing more is sent.</summary>
    Canceled,
    /// <summary>The worker aborted the generation (FINISH_REASON_ABORT, e.g. its drain grace period ran out):
    /// retried on another worker before the first token, otherwise a retriable 503 or an SSE error event.</summary>
    Aborted,
}

public static class ForwarderErrors
{
    public static bool IsRetryable(ForwarderError e) =>
        e is ForwarderError.Saturated or ForwarderError.NotReady or ForwarderError.Unreachable or ForwarderError.Timeout or ForwarderError.WorkerFailed
            or ForwarderError.Aborted;

    /// <summary>Failures that say something about the worker's health (feed its breaker).</summary>
    public static bool CountsAgainstWorker(ForwarderError e) =>
        e is ForwarderError.Unreachable or ForwarderError.Timeout or ForwarderError.WorkerFailed;

    public static ForwarderError FromStatus(StatusCode code) => code switch
    {
        StatusCode.InvalidArgument or StatusCode.OutOfRange => ForwarderError.Rejected,
        StatusCode.ResourceExhausted => ForwarderError.Saturated,
        StatusCode.FailedPrecondition => ForwarderError.NotReady,
        StatusCode.Unavailable => ForwarderError.Unreachable,
        StatusCode.DeadlineExceeded => ForwarderError.Timeout,
        StatusCode.Cancelled => ForwarderError.WorkerFailed,
        _ => ForwarderError.WorkerFailed,
    };

    public static int HttpStatus(ForwarderError e) => e switch
    {
        ForwarderError.NoWorkers => StatusCodes.Status503ServiceUnavailable,
        ForwarderError.Rejected => StatusCodes.Status400BadRequest,
        ForwarderError.Saturated => StatusCodes.Status429TooManyRequests,
        ForwarderError.NotReady => StatusCodes.Status503ServiceUnavailable,
        ForwarderError.Aborted => StatusCodes.Status503ServiceUnavailable,
        ForwarderError.Timeout or ForwarderError.DeadlineExceeded => StatusCodes.Status504GatewayTimeout,
        ForwarderError.Canceled => 499,
        _ => StatusCodes.Status502BadGateway,
    };
}

/// <summary>The outcome of one attempt (or of the whole retried start): a started stream, or an error.</summary>
public sealed class AttemptResult
{
    private readonly bool? _retryable;

    private AttemptResult(ForwarderError error, string message, string? workerId, WorkerStream? stream, bool? retryable = null)
    {
        _retryable = retryable;
        Error = error;
        Message = message;
        WorkerId = workerId;
        Stream = stream;
    }

    public ForwarderError Error { get; }
    public string Message { get; }
    public string? WorkerId { get; }
    public WorkerStream? Stream { get; }

    public bool Retryable => _retryable ?? ForwarderErrors.IsRetryable(Error);

    public static AttemptResult Started(WorkerStream stream) => new(ForwarderError.None, "", stream.WorkerId, stream);

    public static AttemptResult Failed(ForwarderError error, string message, string? workerId = null) => new(error, message, workerId, null);

    /// <summary>A failure no retry can fix (every worker was tried).</summary>
    public static AttemptResult Final(ForwarderError error, string message, string? workerId = null) => new(error, message, workerId, null, retryable: false);
}
