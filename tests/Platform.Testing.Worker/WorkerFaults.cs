// Faults a test switches on while an in-process worker runs, applied by a gRPC
// server interceptor in front of the worker's real Inference service (so the
// service itself is never copied or changed for tests): fail Generate before or
// after some chunks, stall the stream, report unhealthy in GetLoad; and what the
// tests observe (Generate calls, the last traceparent header).
using Grpc.Core;
using Grpc.Core.Interceptors;
using Platform.Core.Protos;

namespace Platform.Testing;

public sealed class WorkerFaults
{
    private int _generateCalls;

    /// <summary>Generate calls received (including those failed by a fault).</summary>
    public int GenerateCalls => Volatile.Read(ref _generateCalls);

    /// <summary>Fail Generate with this status before sending anything.</summary>
    public StatusCode? FailBeforeFirstToken { get; set; }

    /// <summary>Fail Generate with Internal after this many chunks.</summary>
    public int? FailAfterChunks { get; set; }

    /// <summary>With <see cref="FailAfterChunks"/>: only calls that can take one from this budget fail (share one
    /// budget between workers for "the first N calls anywhere fail"); null: every call fails.</summary>
    public FailureBudget? FailureBudget { get; set; }

    /// <summary>Stop sending (but keep the call open) after this many chunks: a frozen worker.</summary>
    public int? StallAfterChunks { get; set; }

    /// <summary>Report unhealthy in GetLoad.</summary>
    public bool Unhealthy { get; set; }

    /// <summary>The W3C traceparent header of the last Generate call.</summary>
    public string? LastTraceParent { get; private set; }

    internal void OnGenerate(ServerCallContext context)
    {
        Interlocked.Increment(ref _generateCalls);
        LastTraceParent = context.RequestHeaders.GetValue("traceparent");
    }
}

internal sealed class FaultInterceptor(WorkerFaults faults) : Interceptor
{
    private static readonly string GenerateMethod = "/" + Inference.Descriptor.FullName + "/Generate";

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (context.Method != GenerateMethod)
        {
            await continuation(request, responseStream, context);
            return;
        }
        faults.OnGenerate(context);
        if (faults.FailBeforeFirstToken is { } status) throw new RpcException(new Status(status, "injected failure"));
        await continuation(request, new FaultyWriter<TResponse>(responseStream, faults, context.CancellationToken), context);
    }

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        var response = await continuation(request, context);
        if (response is LoadReport load && faults.Unhealthy) load.Healthy = false;
        return response;
    }

    private sealed class FaultyWriter<T>(IServerStreamWriter<T> inner, WorkerFaults faults, CancellationToken aborted) : IServerStreamWriter<T>
    {
        private int _sent;
        private bool? _failing;

        public WriteOptions? WriteOptions
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        public async Task WriteAsync(T message)
        {
            if (faults.FailAfterChunks is int n && _sent >= n && (_failing ??= faults.FailureBudget?.TryTake() ?? true))
                throw new RpcException(new Status(StatusCode.Internal, "injected mid-stream failure"));
            if (faults.StallAfterChunks is int stall && _sent >= stall) await Task.Delay(Timeout.Infinite, aborted);
            await inner.WriteAsync(message);
            _sent++;
        }
    }
}

/// <summary>A number of failures several workers draw from (thread-safe).</summary>
public sealed class FailureBudget(int failures)
{
    private int _remaining = failures;

    public int Remaining => Math.Max(0, Volatile.Read(ref _remaining));

    public bool TryTake() => Interlocked.Decrement(ref _remaining) >= 0;
}
