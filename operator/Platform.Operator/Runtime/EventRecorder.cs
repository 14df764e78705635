// Writes core/v1 Events about an object (shown by `kubectl describe`, e.g. of a LongContextModel).
// Events are advice, not state: a failure to write one is logged and never fails a reconcile.
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Platform.Operator.Runtime;

public sealed partial class EventRecorder
{
    public const string Component = "platform-operator";
    private readonly IKubernetes _client;
    private readonly TimeProvider _time;
    private readonly ILogger<EventRecorder> _logger;

    public EventRecorder(IKubernetes client, TimeProvider time, ILogger<EventRecorder> logger)
    {
        _client = client;
        _time = time;
        _logger = logger;
    }

    public async Task RecordAsync(IKubernetesObject<V1ObjectMeta> model, bool warning, string reason, string message, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var ev = new Corev1Event
        {
            ApiVersion = "v1",
            Kind = "Event",
            Metadata = new V1ObjectMeta { GenerateName = model.Metadata.Name + ".", NamespaceProperty = model.Metadata.NamespaceProperty },
            InvolvedObject = new V1ObjectReference
            {
                ApiVersion = model.ApiVersion,
                Kind = model.Kind,
                Name = model.Metadata.Name,
                NamespaceProperty = model.Metadata.NamespaceProperty,
                Uid = model.Metadata.Uid,
                ResourceVersion = model.Metadata.ResourceVersion,
            },
            Type = warning ? "Warning" : "Normal",
            Reason = reason,
            Message = message,
            Count = 1,
            FirstTimestamp = now,
            LastTimestamp = now,
            Source = new V1EventSource { Component = Component },
            ReportingComponent = Component,
        };
        try
        {
            await _client.CoreV1.CreateNamespacedEventAsync(ev, model.Metadata.NamespaceProperty, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            LogEventFailed(_logger, reason, ex);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not record event {Reason}")]
    private static partial void LogEventFailed(ILogger logger, string reason, Exception exception);
}
