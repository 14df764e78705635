// Watches one model's worker StatefulSet and its pods for a whole test (list, then watch, through
// the operator's own Informer, so every event the API server sends is seen in order) and keeps
// each state the API showed: the StatefulSet's spec.replicas and how many of its pods exist and
// are not being deleted, each stamped with when it was seen. A test then asks for the largest
// count ever seen from a moment on, e.g. from when a scale-down took effect.
using System.Diagnostics;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Platform.Operator.Builders;
using Platform.Operator.Runtime;

namespace Platform.Operator.Tests.Infrastructure;

public sealed class ReplicaRecorder : IAsyncDisposable
{
    private static readonly InformerTimings Timings = new(TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(1), TimeSpan.FromMilliseconds(200));
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<ReplicaSample> _samples = [];
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Informer<V1StatefulSet, V1StatefulSetList> _statefulSets;
    private readonly Informer<V1Pod, V1PodList> _pods;
    private readonly Task _running;

    private ReplicaRecorder(IKubernetes client, string ns, string model)
    {
        var statefulSet = Names.WorkerStatefulSet(model);
        _statefulSets = new Informer<V1StatefulSet, V1StatefulSetList>(
            "recorded statefulset",
            (r, ct) => client.AppsV1.ListNamespacedStatefulSetWithHttpMessagesAsync(ns, allowWatchBookmarks: r.Watch, fieldSelector: "metadata.name=" + statefulSet, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (_, _) => Record(),
            Timings, TimeProvider.System, NullLogger.Instance);
        _pods = new Informer<V1Pod, V1PodList>(
            "recorded pods",
            (r, ct) => client.CoreV1.ListNamespacedPodWithHttpMessagesAsync(ns, allowWatchBookmarks: r.Watch, labelSelector: Names.WorkerSelector(model), resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (_, _) => Record(),
            Timings, TimeProvider.System, NullLogger.Instance);
        _running = Task.WhenAll(_statefulSets.RunAsync(_stop.Token), _pods.RunAsync(_stop.Token));
    }

    /// <summary>Time since recording started (the clock of every sample).</summary>
    public TimeSpan Now => _clock.Elapsed;

    public IReadOnlyList<ReplicaSample> Samples
    {
        get
        {
            lock (_lock)
            {
                return [.. _samples];
            }
        }
    }

    public static async Task<ReplicaRecorder> StartAsync(IKubernetes client, string ns, string model)
    {
        var recorder = new ReplicaRecorder(client, ns, model);
        await Task.WhenAll(recorder._statefulSets.Synced, recorder._pods.Synced).WaitAsync(TimeSpan.FromSeconds(10));
        return recorder;
    }

    /// <summary>Waits for the first state (from now on, or already current) that satisfies <paramref name="predicate"/>.</summary>
    public async Task<ReplicaSample> WaitAsync(Func<ReplicaSample, bool> predicate, TimeSpan timeout, string what)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            var samples = Samples;
            if (samples.Count > 0 && samples[^1] is var latest && predicate(latest))
            {
                return latest;
            }

            Assert.True(waited.Elapsed < timeout, $"no {what} within {timeout.TotalSeconds} s; states seen: {Describe()}");
            await Task.Delay(20);
        }
    }

    /// <summary>The largest spec.replicas and live pod count seen at or after <paramref name="from"/>
    /// (the state current at that moment included).</summary>
    public (int StatefulSetReplicas, int LivePods) MaxFrom(TimeSpan from)
    {
        var samples = Samples;
        var current = samples.LastOrDefault(s => s.At <= from);
        var window = samples.Where(s => s.At > from).Prepend(current).OfType<ReplicaSample>().ToList();
        return (window.Max(s => s.StatefulSetReplicas ?? 0), window.Max(s => s.LivePods));
    }

    public string Describe() => string.Join(", ", Samples.Select(s => $"{s.At.TotalSeconds:F2}s sts={s.StatefulSetReplicas?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} pods={s.LivePods}"));

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _running;
        _stop.Dispose();
    }

    private void Record()
    {
        // Read inside the lock: the two informers call in on their own threads, and the state
        // appended last must be the newest.
        lock (_lock)
        {
            var replicas = _statefulSets.Items.FirstOrDefault()?.Spec.Replicas;
            var livePods = _pods.Items.Count(p => p.Metadata.DeletionTimestamp is null);
            if (_samples.Count > 0 && _samples[^1] is var last && last.StatefulSetReplicas == replicas && last.LivePods == livePods)
            {
                return;
            }

            _samples.Add(new ReplicaSample(_clock.Elapsed, replicas, livePods));
        }
    }
}

/// <summary>One state of the workers: the StatefulSet's spec.replicas (null while it does not exist) and its pods not being deleted.</summary>
public sealed record ReplicaSample(TimeSpan At, int? StatefulSetReplicas, int LivePods);
