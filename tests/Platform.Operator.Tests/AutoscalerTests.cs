// The built-in autoscaler in the running operator: with autoscaling enabled, the reconciler
// reads the router's load (a scripted source here), moves spec.replicas through the scale
// subresource between min and max, and the worker StatefulSet follows.
using k8s;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Autoscaling;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class AutoscalerTests : IAsyncLifetime
{
    private readonly ScriptedLoad _load = new();
    private TestCluster _cluster = null!;
    private OperatorInstance _operator = null!;

    private IKubernetes Client => _cluster.Client;

    public async Task InitializeAsync()
    {
        _cluster = await TestCluster.StartAsync();
        _operator = await OperatorInstance.StartAsync(_cluster, "scaler", _load);
    }

    public async Task DisposeAsync()
    {
        await _operator.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Fact]
    public async Task Load_moves_replicas_between_min_and_max()
    {
        _load.Current = new RouterLoad(QueuedPrefillTokens: 100_000, KvUtilization: 0.3);
        var model = Models.New("auto", _cluster.Namespace, replicas: 1);
        model.Spec.Autoscaling = new AutoscalingSpec
        {
            Enabled = true,
            MinReplicas = 1,
            MaxReplicas = 3,
            TargetQueuedPrefillTokensPerReplica = 10_000,
            IntervalSeconds = 1,
            ScaleDownStabilizationSeconds = 0,
        };
        await Models.CreateAsync(Client, model);

        await Waiter.ModelAsync(Client, _cluster.Namespace, "auto", m => m?.Spec.Replicas == 3);
        await Waiter.StatefulSetAsync(Client, _cluster.Namespace, "auto-worker", s => s?.Spec.Replicas == 3);

        _load.Current = new RouterLoad(QueuedPrefillTokens: 0, KvUtilization: 0.1);
        await Waiter.ModelAsync(Client, _cluster.Namespace, "auto", m => m?.Spec.Replicas == 1);
        await Waiter.StatefulSetAsync(Client, _cluster.Namespace, "auto-worker", s => s?.Spec.Replicas == 1);
        Assert.True(_load.Reads >= 2);
    }

    [Fact]
    public async Task No_reading_holds_replicas_and_records_a_warning_event_naming_the_problem()
    {
        _load.Current = null;
        var model = Models.New("blind", _cluster.Namespace, replicas: 2);
        model.Spec.Autoscaling = new AutoscalingSpec { Enabled = true, MinReplicas = 1, MaxReplicas = 3, IntervalSeconds = 1 };
        await Models.CreateAsync(Client, model);

        await Waiter.UntilAsync<Corev1Event, Corev1EventList>(
            (rv, watch, ct) => Client.CoreV1.ListNamespacedEventWithHttpMessagesAsync(_cluster.Namespace, resourceVersion: rv, watch: watch, cancellationToken: ct),
            e => e?.InvolvedObject.Name == "blind" && e.Reason == "AutoscalerNoMetrics" && e.Type == "Warning" && e.Message.Contains("scripted: no reading", StringComparison.Ordinal),
            Waiter.DefaultTimeout,
            "the AutoscalerNoMetrics warning event");
        await Waiter.ModelAsync(Client, _cluster.Namespace, "blind", m => m?.Spec.Replicas == 2);
    }

    private sealed class ScriptedLoad : IRouterLoadSource
    {
        private int _reads;

        public volatile RouterLoad? Current;

        public int Reads => Volatile.Read(ref _reads);

        public Task<RouterLoadReading> GetLoadAsync(LongContextModel model, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _reads);
            return Task.FromResult(Current is { } load
                ? RouterLoadReading.Of(load)
                : RouterLoadReading.None(NoReadingReason.MissingSeries, "scripted: no reading"));
        }
    }
}
