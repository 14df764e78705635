// Source-generated log messages of the worker. Per-request lines are Debug so a
// busy worker does not log every request at Information.
using Microsoft.Extensions.Logging;

namespace Platform.Worker;

internal static partial class Log
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Worker {WorkerId} listening: gRPC {GrpcAddress}, HTTP {HttpAddress}")]
    public static partial void Listening(ILogger logger, string workerId, string grpcAddress, string httpAddress);

    [LoggerMessage(Level = LogLevel.Information, Message = "Loading model {ModelDirectory} as '{ServedModelName}'")]
    public static partial void ModelLoading(ILogger logger, string modelDirectory, string servedModelName);

    [LoggerMessage(Level = LogLevel.Information, Message = "Model loaded in {ElapsedSeconds:F1} s: {Fingerprint}, {KvBlocks} KV blocks, context {MaxContext}")]
    public static partial void ModelLoaded(ILogger logger, double elapsedSeconds, string fingerprint, int kvBlocks, int maxContext);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Loading the model from {ModelDirectory} failed; the worker stops")]
    public static partial void ModelLoadFailed(ILogger logger, string modelDirectory, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "The engine cannot run on its device: {Reason}")]
    public static partial void DeviceUnavailable(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Generate {RequestId}: {PromptTokens} prompt tokens, max_tokens {MaxTokens}")]
    public static partial void GenerateStarted(ILogger logger, string requestId, int promptTokens, int maxTokens);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Generate {RequestId} finished: {FinishReason}, {CompletionTokens} tokens, {CachedTokens} cached, {ElapsedMs:F1} ms")]
    public static partial void GenerateFinished(ILogger logger, string requestId, string finishReason, int completionTokens, int cachedTokens, double elapsedMs);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Generate {RequestId} rejected: {Reason}")]
    public static partial void GenerateRejected(ILogger logger, string requestId, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Generate {RequestId} cancelled by the client after {CompletionTokens} tokens")]
    public static partial void GenerateCancelled(ILogger logger, string requestId, int completionTokens);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Generate {RequestId} aborted: the drain grace period ended after {CompletionTokens} tokens")]
    public static partial void GenerateAbortedByShutdown(ILogger logger, string requestId, int completionTokens);

    [LoggerMessage(Level = LogLevel.Information, Message = "Draining: readiness is false and new requests are refused; {InFlight} in flight, grace period {GraceSeconds} s")]
    public static partial void DrainStarted(ILogger logger, int inFlight, double graceSeconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Drain complete: no request in flight")]
    public static partial void DrainCompleted(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Drain grace period ended with {InFlight} requests in flight; aborting them")]
    public static partial void DrainGraceExpired(ILogger logger, int inFlight);

    [LoggerMessage(Level = LogLevel.Debug, Message = "KV event subscriber {Peer} connected at sequence {Sequence} with {Blocks} blocks in the snapshot")]
    public static partial void KvSubscriberConnected(ILogger logger, string peer, long sequence, int blocks);

    [LoggerMessage(Level = LogLevel.Warning, Message = "KV event subscriber {Peer} fell {Capacity} batches behind; disconnecting it so it resyncs")]
    public static partial void KvSubscriberOverflow(ILogger logger, string peer, int capacity);

    [LoggerMessage(Level = LogLevel.Debug, Message = "KV event subscriber {Peer} disconnected")]
    public static partial void KvSubscriberDisconnected(ILogger logger, string peer);

    [LoggerMessage(Level = LogLevel.Information, Message = "Downloading {Model}: {Percent}% ({Bytes} of {TotalBytes} bytes), file {File}")]
    public static partial void HubDownloadProgress(ILogger logger, string model, int percent, long bytes, long totalBytes, string file);

    [LoggerMessage(Level = LogLevel.Information, Message = "Model {Model} is in the hub cache at {Snapshot} ({ElapsedSeconds:F1} s)")]
    public static partial void HubDownloaded(ILogger logger, string model, string snapshot, double elapsedSeconds);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Downloading {Model} failed: {Reason}")]
    public static partial void HubDownloadFailed(ILogger logger, string model, string reason);
}
