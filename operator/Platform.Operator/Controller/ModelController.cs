// The controller loop: informers on LongContextModels and on the StatefulSets and Deployments
// the operator owns feed keys into one work queue; N workers take keys and reconcile them.
// A change to an owned child enqueues its owner, so status follows the children without
// polling. Success forgets the key's backoff and honours RequeueAfter; failure requeues it with
// exponential backoff. Each reconcile logs under a scope carrying a short reconcile id.
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Runtime;

namespace Platform.Operator.Controller;

/// <summary>How the controller loop runs (the host fills it from OperatorOptions).</summary>
/// <param name="WatchNamespace">Namespace to watch; null watches all.</param>
/// <param name="Workers">Reconciles in parallel (never two for one model).</param>
public sealed record ControllerSettings(string? WatchNamespace, int Workers, TimeSpan BackoffBase, TimeSpan BackoffMax, InformerTimings InformerTimings);

public sealed partial class ModelController
{
    private readonly IKubernetes _client;
    private readonly LongContextModelReconciler _reconciler;
    private readonly ControllerSettings _options;
    private readonly OperatorMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger<ModelController> _logger;
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ModelController(IKubernetes client, LongContextModelReconciler reconciler, ControllerSettings options, OperatorMetrics metrics, TimeProvider time, ILoggerFactory loggers)
    {
        _client = client;
        _reconciler = reconciler;
        _options = options;
        _metrics = metrics;
        _time = time;
        _loggers = loggers;
        _logger = loggers.CreateLogger<ModelController>();
    }

    /// <summary>Completes once the model informer has listed (for readiness).</summary>
    public Task Synced => _synced.Task;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var queue = new WorkQueue<string>(_time, _options.BackoffBase, _options.BackoffMax);
        var ns = string.IsNullOrEmpty(_options.WatchNamespace) ? null : _options.WatchNamespace;
        var managed = Names.ManagedByLabel + "=" + Names.ManagedBy;
        var timings = _options.InformerTimings;
        var informerLogger = _loggers.CreateLogger("Platform.Operator.Informer");

        var models = new Informer<LongContextModel, LongContextModelList>(
            LongContextModel.Plural,
            (r, ct) => ns is null
                ? _client.CustomObjects.ListClusterCustomObjectWithHttpMessagesAsync<LongContextModelList>(LongContextModel.Group, LongContextModel.Version, LongContextModel.Plural, allowWatchBookmarks: r.Watch, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct)
                : _client.CustomObjects.ListNamespacedCustomObjectWithHttpMessagesAsync<LongContextModelList>(LongContextModel.Group, LongContextModel.Version, ns, LongContextModel.Plural, allowWatchBookmarks: r.Watch, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (_, m) => queue.Add(ObjectKey.Of(m)),
            timings, _time, informerLogger);
        var statefulSets = new Informer<V1StatefulSet, V1StatefulSetList>(
            "statefulsets",
            (r, ct) => ns is null
                ? _client.AppsV1.ListStatefulSetForAllNamespacesWithHttpMessagesAsync(allowWatchBookmarks: r.Watch, labelSelector: managed, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct)
                : _client.AppsV1.ListNamespacedStatefulSetWithHttpMessagesAsync(ns, allowWatchBookmarks: r.Watch, labelSelector: managed, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (_, s) => EnqueueOwner(queue, s),
            timings, _time, informerLogger);
        var deployments = new Informer<V1Deployment, V1DeploymentList>(
            "deployments",
            (r, ct) => ns is null
                ? _client.AppsV1.ListDeploymentForAllNamespacesWithHttpMessagesAsync(allowWatchBookmarks: r.Watch, labelSelector: managed, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct)
                : _client.AppsV1.ListNamespacedDeploymentWithHttpMessagesAsync(ns, allowWatchBookmarks: r.Watch, labelSelector: managed, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (_, d) => EnqueueOwner(queue, d),
            timings, _time, informerLogger);

        LogStarting(_logger, ns ?? "(all)", _options.Workers);
        var tasks = new List<Task> { models.RunAsync(cancellationToken), statefulSets.RunAsync(cancellationToken), deployments.RunAsync(cancellationToken) };
        _ = models.Synced.ContinueWith(_ => _synced.TrySetResult(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        for (var i = 0; i < _options.Workers; i++)
        {
            tasks.Add(WorkAsync(queue, cancellationToken));
        }

        await Task.WhenAll(tasks).ConfigureAwait(false);
    }

    private static void EnqueueOwner(WorkQueue<string> queue, IKubernetesObject<V1ObjectMeta> child)
    {
        var owner = child.Metadata.OwnerReferences?.FirstOrDefault(o => o.Controller == true && o.Kind == LongContextModel.KindName);
        if (owner is not null)
        {
            queue.Add(child.Metadata.NamespaceProperty + "/" + owner.Name);
        }
    }

    private async Task WorkAsync(WorkQueue<string> queue, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            string key;
            try
            {
                key = await queue.TakeAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            var reconcileId = Guid.NewGuid().ToString("N")[..8];
            var started = _time.GetTimestamp();
            using (_logger.BeginScope(new Dictionary<string, object> { ["ReconcileId"] = reconcileId, ["Model"] = key }))
            {
                try
                {
                    _metrics.ReconcileStarted();
                    var slash = key.IndexOf('/', StringComparison.Ordinal);
                    var result = await _reconciler.ReconcileAsync(key[..slash], key[(slash + 1)..], cancellationToken).ConfigureAwait(false);
                    queue.Forget(key);
                    if (result.RequeueAfter is { } after)
                    {
                        queue.AddAfter(key, after);
                    }

                    _metrics.Reconciled("success", _time.GetElapsedTime(started));
                    LogReconciled(_logger, key, _time.GetElapsedTime(started).TotalMilliseconds);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    var delay = queue.AddRateLimited(key);
                    _metrics.Reconciled("error", _time.GetElapsedTime(started));
                    LogReconcileFailed(_logger, key, delay.TotalMilliseconds, ex);
                }
                finally
                {
                    queue.Done(key);
                }
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Controller starting: namespace {Namespace}, {Workers} workers")]
    private static partial void LogStarting(ILogger logger, string @namespace, int workers);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Reconciled {Model} in {Milliseconds:F1} ms")]
    private static partial void LogReconciled(ILogger logger, string model, double milliseconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reconcile of {Model} failed; retrying in {DelayMs} ms")]
    private static partial void LogReconcileFailed(ILogger logger, string model, double delayMs, Exception exception);
}
