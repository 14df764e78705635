// Level-based reconcile of one LongContextModel: read it fresh, validate the spec, make every
// owned child match its pure builder (one loop over the ChildKinds table: create when missing,
// replace only when the desired object's hash differs, always with the live resourceVersion so a
// concurrent writer gets 409),
// then compute status conditions from what the children report and write the status
// subresource only when it changed. An invalid spec sets Degraded and touches nothing else.
// With autoscaling enabled it also runs the built-in policy and asks to be requeued after the
// policy interval. With remote.purgeOnDelete it keeps a finalizer on the model and, once the
// model is being deleted, purges its keys from the remote KV store before letting it go (the
// only thing outside the cluster; children go by garbage collection).
// Errors (409 included) propagate: the controller retries with backoff.
using System.Collections.Concurrent;
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Platform.Operator.Api;
using Platform.Operator.Autoscaling;
using Platform.Operator.Builders;
using Platform.Operator.Runtime;
using Platform.Operator.KvStore;

namespace Platform.Operator.Controller;

public readonly record struct ReconcileResult(TimeSpan? RequeueAfter)
{
    public static ReconcileResult Done => new(null);
}

public sealed partial class LongContextModelReconciler
{
    private readonly IKubernetes _client;
    private readonly ImageDefaults _images;
    private readonly MonitoringAccess? _monitoring;
    private readonly IRouterLoadSource _loadSource;
    private readonly IKvStorePurger _purger;
    private readonly EventRecorder _events;
    private readonly OperatorMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger<LongContextModelReconciler> _logger;
    private readonly ConcurrentDictionary<string, ScaleStabilizer> _stabilizers = new(StringComparer.Ordinal);
    // Models whose last load read failed, with the reason: the Event is recorded on the transition only.
    private readonly ConcurrentDictionary<string, NoReadingReason> _noReading = new(StringComparer.Ordinal);

    public LongContextModelReconciler(IKubernetes client, ImageDefaults images, MonitoringAccess? monitoring, IRouterLoadSource loadSource, IKvStorePurger purger, EventRecorder events, OperatorMetrics metrics, TimeProvider time, ILogger<LongContextModelReconciler> logger)
    {
        _client = client;
        _images = images;
        _monitoring = monitoring;
        _loadSource = loadSource;
        _purger = purger;
        _events = events;
        _metrics = metrics;
        _time = time;
        _logger = logger;
    }

    public async Task<ReconcileResult> ReconcileAsync(string ns, string name, CancellationToken cancellationToken)
    {
        var key = ns + "/" + name;
        LongContextModel model;
        try
        {
            model = await _client.CustomObjects.GetNamespacedCustomObjectAsync<LongContextModel>(
                LongContextModel.Group, LongContextModel.Version, ns, LongContextModel.Plural, name, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Deleted: owner references let the garbage collector remove the children.
            _stabilizers.TryRemove(key, out _);
            _noReading.TryRemove(key, out _);
            return ReconcileResult.Done;
        }

        var hasFinalizer = model.Metadata.Finalizers?.Contains(Names.Finalizer) == true;
        if (model.Metadata.DeletionTimestamp is not null)
        {
            if (hasFinalizer)
            {
                await FinalizeAsync(model, cancellationToken).ConfigureAwait(false);
            }

            return ReconcileResult.Done;
        }

        var wantsFinalizer = model.Spec.KvCache.Remote is { PurgeOnDelete: true };
        if (wantsFinalizer != hasFinalizer)
        {
            var finalizers = model.Metadata.Finalizers?.Where(f => f != Names.Finalizer).ToList() ?? [];
            if (wantsFinalizer)
            {
                finalizers.Add(Names.Finalizer);
            }

            model.Metadata.Finalizers = finalizers;
            model = await ReplaceModelAsync(model, cancellationToken).ConfigureAwait(false);
        }

        var generation = model.Metadata.Generation ?? 0;
        var before = model.Status is null ? null : KubernetesJson.Serialize(model.Status);
        var status = model.Status ?? new LongContextModelStatus();
        status.Conditions ??= [];
        var oldConditions = status.Conditions.Select(c => (c.Type, c.Status)).ToList();
        var now = _time.GetUtcNow();

        var errors = SpecValidator.Validate(model.Spec);
        if (errors.Count > 0)
        {
            var message = string.Join("; ", errors);
            LogInvalidSpec(_logger, key, message);
            Conditions.Set(status.Conditions, ConditionTypes.Degraded, true, ConditionReasons.InvalidSpec, message, generation, now);
            status.ObservedGeneration = generation;
            await WriteStatusAsync(model, status, before, oldConditions, cancellationToken).ConfigureAwait(false);
            return ReconcileResult.Done;
        }

        var desired = ChildObjects.Build(model, _images, _monitoring);
        var live = new Dictionary<ChildKind, IKubernetesObject<V1ObjectMeta>>();
        foreach (var kind in ChildKinds.All)
            live[kind] = await EnsureAsync(kind, kind.Desired(desired), cancellationToken).ConfigureAwait(false);
        var workers = (V1StatefulSet)live[ChildKinds.Workers];
        var router = (V1Deployment)live[ChildKinds.Router];

        ComputeStatus(model, status, workers, router, generation, now);
        await WriteStatusAsync(model, status, before, oldConditions, cancellationToken).ConfigureAwait(false);

        if (!model.Spec.Autoscaling.Enabled)
        {
            _stabilizers.TryRemove(key, out _);
            _noReading.TryRemove(key, out _);
            return ReconcileResult.Done;
        }

        await AutoscaleAsync(key, model, now, cancellationToken).ConfigureAwait(false);
        return new ReconcileResult(TimeSpan.FromSeconds(model.Spec.Autoscaling.IntervalSeconds));
    }

    /// <summary>Purges the model's remote KV keys, then removes the finalizer so deletion completes.</summary>
    private async Task FinalizeAsync(LongContextModel model, CancellationToken cancellationToken)
    {
        var key = model.Metadata.NamespaceProperty + "/" + model.Metadata.Name;
        if (model.Spec.KvCache.Remote is { } remote)
        {
            string? password = null;
            if (remote.Redis.SecretRef is { } secretRef)
            {
                var secret = await _client.CoreV1.ReadNamespacedSecretAsync(secretRef.Name, model.Metadata.NamespaceProperty, cancellationToken: cancellationToken).ConfigureAwait(false);
                password = secret.Data?.TryGetValue(secretRef.Key, out var bytes) == true ? System.Text.Encoding.UTF8.GetString(bytes) : null;
            }

            var prefix = Names.KvKeyPrefix(model.Metadata.NamespaceProperty, model.Metadata.Name);
            long purged;
            try
            {
                purged = await _purger.PurgeAsync(remote.Redis.Address, password, prefix, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                await _events.RecordAsync(model, true, "KvPurgeFailed", $"could not purge {prefix}* from {remote.Redis.Address}: {ex.Message}; retrying (remove the finalizer {Names.Finalizer} to give up)", cancellationToken).ConfigureAwait(false);
                throw;
            }

            LogPurged(_logger, key, purged, prefix);
        }

        model.Metadata.Finalizers = model.Metadata.Finalizers.Where(f => f != Names.Finalizer).ToList();
        await ReplaceModelAsync(model, cancellationToken).ConfigureAwait(false);
    }

    private Task<LongContextModel> ReplaceModelAsync(LongContextModel model, CancellationToken cancellationToken) =>
        _client.CustomObjects.ReplaceNamespacedCustomObjectAsync<LongContextModel>(
            model, LongContextModel.Group, LongContextModel.Version, model.Metadata.NamespaceProperty, LongContextModel.Plural, model.Metadata.Name, cancellationToken: cancellationToken);

    /// <summary>Sets the conditions, replica counts, selector and endpoint from the children's status.</summary>
    internal static void ComputeStatus(LongContextModel model, LongContextModelStatus status, V1StatefulSet workers, V1Deployment router, long generation, DateTimeOffset now)
    {
        var name = model.Metadata.Name;
        var desired = model.Spec.Replicas;
        var ready = workers.Status?.ReadyReplicas ?? 0;
        var current = workers.Status?.Replicas ?? 0;
        var updated = workers.Status?.UpdatedReplicas ?? 0;
        var workersObserved = workers.Status?.ObservedGeneration >= workers.Metadata.Generation;
        var routerDesired = model.Spec.Router.Replicas;
        var routerReady = router.Status?.ReadyReplicas ?? 0;
        var routerUpdated = router.Status?.UpdatedReplicas ?? 0;
        var routerObserved = router.Status?.ObservedGeneration >= router.Metadata.Generation;

        status.ObservedGeneration = generation;
        status.Replicas = current;
        status.ReadyReplicas = ready;
        status.Selector = Names.WorkerSelector(name);
        status.Endpoint = Names.Endpoint(name, model.Metadata.NamespaceProperty);

        var workersDone = workersObserved && updated >= desired && ready >= desired && current == desired;
        var routerDone = routerObserved && routerUpdated >= routerDesired && routerReady >= routerDesired;
        var conditions = status.Conditions!;
        Conditions.Set(conditions, ConditionTypes.Degraded, false, ConditionReasons.SpecValid, "The spec is valid", generation, now);
        if (workersDone && routerDone)
        {
            Conditions.Set(conditions, ConditionTypes.Progressing, false, ConditionReasons.RolloutComplete, $"{ready}/{desired} workers and {routerReady}/{routerDesired} routers on the current spec", generation, now);
        }
        else
        {
            Conditions.Set(conditions, ConditionTypes.Progressing, true, ConditionReasons.RollingOut, $"{ready}/{desired} workers ready ({updated} updated), {routerReady}/{routerDesired} routers ready", generation, now);
        }

        if (desired == 0)
        {
            Conditions.Set(conditions, ConditionTypes.Ready, false, ConditionReasons.ScaledToZero, "spec.replicas is 0", generation, now);
        }
        else if (!workersDone)
        {
            Conditions.Set(conditions, ConditionTypes.Ready, false, ConditionReasons.WorkersNotReady, $"{ready}/{desired} workers ready", generation, now);
        }
        else if (!routerDone)
        {
            Conditions.Set(conditions, ConditionTypes.Ready, false, ConditionReasons.RouterNotReady, $"{routerReady}/{routerDesired} routers ready", generation, now);
        }
        else
        {
            Conditions.Set(conditions, ConditionTypes.Ready, true, ConditionReasons.AllReplicasReady, $"{ready}/{desired} workers and {routerReady} routers ready", generation, now);
        }

        // A worker turns ready only after it has loaded the model.
        Conditions.Set(conditions, ConditionTypes.ModelLoaded, ready > 0, ready > 0 ? ConditionReasons.Loaded : ConditionReasons.Loading,
            ready > 0 ? $"{ready} workers serve {model.Spec.Model.ServedName}" : $"loading {model.Spec.Model.Source}", generation, now);
    }

    private async Task WriteStatusAsync(LongContextModel model, LongContextModelStatus status, string? before, List<(string Type, string Status)> oldConditions, CancellationToken cancellationToken)
    {
        if (before is not null && before == KubernetesJson.Serialize(status))
        {
            return;
        }

        model.Status = status;
        await _client.CustomObjects.ReplaceNamespacedCustomObjectStatusAsync<LongContextModel>(
            model, LongContextModel.Group, LongContextModel.Version, model.Metadata.NamespaceProperty, LongContextModel.Plural, model.Metadata.Name, cancellationToken: cancellationToken).ConfigureAwait(false);

        foreach (var condition in status.Conditions ?? [])
        {
            var old = oldConditions.FirstOrDefault(c => c.Type == condition.Type);
            if (old.Status == condition.Status || (old.Type is null && condition.Status == "False"))
            {
                continue;
            }

            var warning = condition.Type == ConditionTypes.Degraded ? condition.Status == "True" : condition.Type == ConditionTypes.Ready && condition.Status == "False";
            await _events.RecordAsync(model, warning, $"{condition.Type}{condition.Status}", $"{condition.Reason}: {condition.Message}", cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task AutoscaleAsync(string key, LongContextModel model, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var spec = model.Spec.Autoscaling;
        var reading = await _loadSource.GetLoadAsync(model, cancellationToken).ConfigureAwait(false);
        if (reading.Load is not { } load)
        {
            // Never silent: a warning each interval, a counter by reason, and an Event when it starts.
            var reason = reading.Reason ?? NoReadingReason.Unreachable;
            _metrics.NoLoadReading(reason.ToString());
            LogNoLoad(_logger, key, reason, reading.Problem ?? "no reading");
            if (!_noReading.TryGetValue(key, out var previous) || previous != reason)
            {
                _noReading[key] = reason;
                await _events.RecordAsync(model, true, "AutoscalerNoMetrics", $"replicas held at {model.Spec.Replicas}: {reading.Problem}", cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        _noReading.TryRemove(key, out _);

        var current = model.Spec.Replicas;
        var recommendation = ScalingPolicy.Recommend(current, load, spec);
        var stabilizer = _stabilizers.GetOrAdd(key, _ => new ScaleStabilizer());
        var target = Math.Clamp(
            stabilizer.Stabilize(now, recommendation, current, TimeSpan.FromSeconds(spec.ScaleUpStabilizationSeconds), TimeSpan.FromSeconds(spec.ScaleDownStabilizationSeconds)),
            spec.MinReplicas,
            spec.MaxReplicas);
        if (target == current)
        {
            return;
        }

        var patch = new V1Patch("{\"spec\":{\"replicas\":" + target.ToString(System.Globalization.CultureInfo.InvariantCulture) + "}}", V1Patch.PatchType.MergePatch);
        await _client.CustomObjects.PatchNamespacedCustomObjectScaleAsync(
            patch, LongContextModel.Group, LongContextModel.Version, model.Metadata.NamespaceProperty, LongContextModel.Plural, model.Metadata.Name, cancellationToken: cancellationToken).ConfigureAwait(false);
        _metrics.Scaled();
        LogScaled(_logger, key, current, target, load.QueuedPrefillTokens, load.KvUtilization);
        await _events.RecordAsync(model, false, "Scaled", $"replicas {current} -> {target} (queued prefill tokens {load.QueuedPrefillTokens:F0}, KV utilisation {load.KvUtilization:F2})", cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Creates the child when missing; replaces it when its spec hash differs; refuses one another controller owns.</summary>
    private async Task<IKubernetesObject<V1ObjectMeta>> EnsureAsync(ChildKind kind, IKubernetesObject<V1ObjectMeta> desired, CancellationToken cancellationToken)
    {
        var name = desired.Metadata.Name;
        var ns = desired.Metadata.NamespaceProperty;
        IKubernetesObject<V1ObjectMeta> existing;
        try
        {
            existing = await kind.ReadAsync(_client, name, ns, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            var created = await kind.CreateAsync(_client, desired, ns, cancellationToken).ConfigureAwait(false);
            _metrics.ChildWritten(kind.Kind, "create");
            LogChildWritten(_logger, kind.Kind, ns, name, "created");
            return created;
        }

        var owner = desired.Metadata.OwnerReferences[0];
        var existingController = existing.Metadata.OwnerReferences?.FirstOrDefault(o => o.Controller == true);
        if (existingController is not null && existingController.Uid != owner.Uid)
        {
            throw new InvalidOperationException($"{kind.Kind} {ns}/{name} is controlled by {existingController.Kind} {existingController.Name}; delete it or rename the model");
        }

        var wantHash = desired.Metadata.Annotations[Names.SpecHashAnnotation];
        if (existingController is not null && existing.Metadata.Annotations?.TryGetValue(Names.SpecHashAnnotation, out var haveHash) == true && haveHash == wantHash)
        {
            return existing;
        }

        desired.Metadata.ResourceVersion = existing.Metadata.ResourceVersion;
        kind.Preserve(existing, desired);
        var replaced = await kind.ReplaceAsync(_client, desired, name, ns, cancellationToken).ConfigureAwait(false);
        _metrics.ChildWritten(kind.Kind, "replace");
        LogChildWritten(_logger, kind.Kind, ns, name, "replaced");
        return replaced;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Model}: purged {Count} remote KV keys under {Prefix}")]
    private static partial void LogPurged(ILogger logger, string model, long count, string prefix);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Model}: invalid spec, marked Degraded: {Message}")]
    private static partial void LogInvalidSpec(ILogger logger, string model, string message);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Kind} {Namespace}/{Name} {Operation}")]
    private static partial void LogChildWritten(ILogger logger, string kind, string @namespace, string name, string operation);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Model}: no load reading from the router ({Reason}), replicas held: {Problem}")]
    private static partial void LogNoLoad(ILogger logger, string model, NoReadingReason reason, string problem);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Model}: autoscaled {From} -> {To} replicas (queued {Queued}, KV {Kv})")]
    private static partial void LogScaled(ILogger logger, string model, int from, int to, double queued, double kv);
}
