// The operator end to end against the fake API server (or a real cluster): a replica started
// as Program.cs builds it reconciles LongContextModels into owned children, reports status
// conditions with observedGeneration, rolls out spec changes through the config hash, marks an
// invalid spec Degraded without touching anything else, survives injected 409s and expired
// watches, and follows the scale subresource.
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class ReconcileTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;
    private OperatorInstance _operator = null!;

    private IKubernetes Client => _cluster.Client;

    private string Ns => _cluster.Namespace;

    public async Task InitializeAsync()
    {
        _cluster = await TestCluster.StartAsync();
        _operator = await OperatorInstance.StartAsync(_cluster, "solo");
    }

    public async Task DisposeAsync()
    {
        await _operator.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Fact]
    public async Task Create_makes_every_child_with_an_owner_reference_and_reports_Progressing()
    {
        var model = await Models.CreateAsync(Client, Models.New("alpha", Ns, replicas: 2));

        var progressing = await Waiter.ModelAsync(Client, Ns, "alpha", m => Models.HasCondition(m, ConditionTypes.Progressing, "True", generation: 1));
        Assert.Equal(1, progressing!.Status!.ObservedGeneration);
        Assert.Equal("False", Conditions.Find(progressing.Status.Conditions, ConditionTypes.Ready)!.Status);
        Assert.Equal("False", Conditions.Find(progressing.Status.Conditions, ConditionTypes.Degraded)!.Status);
        Assert.Equal(Names.WorkerSelector("alpha"), progressing.Status.Selector);
        Assert.Equal($"http://alpha.{Ns}.svc:80", progressing.Status.Endpoint);

        var sts = await Client.AppsV1.ReadNamespacedStatefulSetAsync("alpha-worker", Ns);
        Assert.Equal(2, sts.Spec.Replicas);
        Assert.Equal("alpha-workers", sts.Spec.ServiceName);
        Assert.Equal("1", sts.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Equal("registry.test/worker:1", sts.Spec.Template.Spec.Containers[0].Image);
        var headless = await Client.CoreV1.ReadNamespacedServiceAsync("alpha-workers", Ns);
        Assert.Equal("None", headless.Spec.ClusterIP);
        var router = await Client.AppsV1.ReadNamespacedDeploymentAsync("alpha-router", Ns);
        Assert.Equal("registry.test/router:1", router.Spec.Template.Spec.Containers[0].Image);
        var routerService = await Client.CoreV1.ReadNamespacedServiceAsync("alpha", Ns);
        Assert.Equal(80, routerService.Spec.Ports[0].Port);
        var config = await Client.CoreV1.ReadNamespacedConfigMapAsync("alpha-config", Ns);
        Assert.Contains("pvc://models/qwen2.5-7b-1m", config.Data["engine.json"], StringComparison.Ordinal);
        var pdb = await Client.PolicyV1.ReadNamespacedPodDisruptionBudgetAsync("alpha-worker", Ns);
        Assert.Equal("1", pdb.Spec.MaxUnavailable.Value);
        var policy = await Client.NetworkingV1.ReadNamespacedNetworkPolicyAsync("alpha-worker", Ns);
        // The router's discovery account: ServiceAccount, Role (list/watch EndpointSlices) and RoleBinding.
        Assert.Equal("alpha-router", router.Spec.Template.Spec.ServiceAccountName);
        var account = await Client.CoreV1.ReadNamespacedServiceAccountAsync("alpha-router", Ns);
        var role = await Client.RbacAuthorizationV1.ReadNamespacedRoleAsync("alpha-router", Ns);
        Assert.Equal(["list", "watch"], Assert.Single(role.Rules).Verbs);
        var binding = await Client.RbacAuthorizationV1.ReadNamespacedRoleBindingAsync("alpha-router", Ns);
        Assert.Equal("alpha-router", Assert.Single(binding.Subjects).Name);

        foreach (var child in new IKubernetesObject<V1ObjectMeta>[] { sts, headless, router, routerService, config, pdb, policy, account, role, binding })
        {
            var owner = Assert.Single(child.Metadata.OwnerReferences);
            Assert.Equal(model.Metadata.Uid, owner.Uid);
            Assert.Equal(LongContextModel.KindName, owner.Kind);
            Assert.True(owner.Controller);
        }
    }

    [FakeOnlyFact]
    public async Task Status_turns_Ready_when_the_pods_are_ready()
    {
        await Models.CreateAsync(Client, Models.New("ready", Ns, replicas: 3));
        await Waiter.StatefulSetAsync(Client, Ns, "ready-worker", s => s is not null);
        await Waiter.DeploymentAsync(Client, Ns, "ready-router", d => d is not null);

        Models.MarkReady(_cluster, "ready");

        var model = await Waiter.ModelAsync(Client, Ns, "ready", m => Models.HasCondition(m, ConditionTypes.Ready, "True"));
        Assert.Equal(3, model!.Status!.ReadyReplicas);
        Assert.True(Models.HasCondition(model, ConditionTypes.Progressing, "False"));
        Assert.True(Models.HasCondition(model, ConditionTypes.ModelLoaded, "True"));
        Assert.All(model.Status.Conditions!, c => Assert.Equal(1, c.ObservedGeneration));

        // Events follow the status write: wait for the transition's Event by watch.
        await Waiter.UntilAsync<Corev1Event, Corev1EventList>(
            (rv, watch, ct) => Client.CoreV1.ListNamespacedEventWithHttpMessagesAsync(Ns, resourceVersion: rv, watch: watch, cancellationToken: ct),
            e => e?.InvolvedObject.Name == "ready" && e.Reason == "ReadyTrue" && e.Type == "Normal",
            Waiter.DefaultTimeout,
            "the ReadyTrue event");
    }

    [Fact]
    public async Task A_spec_change_rolls_out_through_the_config_hash()
    {
        await Models.CreateAsync(Client, Models.New("roll", Ns));
        var before = await Waiter.StatefulSetAsync(Client, Ns, "roll-worker", s => s is not null);
        var hashBefore = before!.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation];

        var updated = await Models.UpdateSpecAsync(Client, Ns, "roll", s => s.Worker.Engine.MaxBatchTokens = 4096);
        Assert.Equal(2, updated.Metadata.Generation);

        var after = await Waiter.StatefulSetAsync(Client, Ns, "roll-worker", s => s!.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation] != hashBefore);
        var newHash = after!.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation];
        await Waiter.DeploymentAsync(Client, Ns, "roll-router", d => d!.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation] == newHash);
        var config = await Client.CoreV1.ReadNamespacedConfigMapAsync("roll-config", Ns);
        Assert.Contains("\"maxBatchTokens\": 4096", config.Data["engine.json"], StringComparison.Ordinal);
        await Waiter.ModelAsync(Client, Ns, "roll", m => m!.Status?.ObservedGeneration == 2 && Models.HasCondition(m, ConditionTypes.Progressing, "True", generation: 2));
    }

    [Fact]
    public async Task An_invalid_spec_sets_Degraded_and_changes_nothing_else()
    {
        await Models.CreateAsync(Client, Models.New("bad", Ns));
        await Waiter.ModelAsync(Client, Ns, "bad", m => Models.HasCondition(m, ConditionTypes.Progressing, "True", generation: 1));
        var sts = await Client.AppsV1.ReadNamespacedStatefulSetAsync("bad-worker", Ns);
        var config = await Client.CoreV1.ReadNamespacedConfigMapAsync("bad-config", Ns);

        // A router policy outside the enum: the CRD's schema would refuse it, so on a real
        // cluster write it through the status-less path the fake allows only; here it "slipped past".
        try
        {
            await Models.UpdateSpecAsync(Client, Ns, "bad", s => { s.Worker.Engine.BlockSize = 12; s.Replicas = 5; });
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.UnprocessableEntity && _cluster.Fake is null)
        {
            // A real API server enforces the CEL rule: the invalid spec cannot even be stored.
            Assert.Contains("blockSize", ex.Response.Content, StringComparison.Ordinal);
            return;
        }

        var degraded = await Waiter.ModelAsync(Client, Ns, "bad", m => Models.HasCondition(m, ConditionTypes.Degraded, "True", generation: 2));
        var condition = Conditions.Find(degraded!.Status!.Conditions, ConditionTypes.Degraded)!;
        Assert.Equal(ConditionReasons.InvalidSpec, condition.Reason);
        Assert.Contains("blockSize (12)", condition.Message, StringComparison.Ordinal);
        Assert.Equal(2, degraded.Status.ObservedGeneration);

        Assert.Equal(sts.Metadata.ResourceVersion, (await Client.AppsV1.ReadNamespacedStatefulSetAsync("bad-worker", Ns)).Metadata.ResourceVersion);
        Assert.Equal(config.Metadata.ResourceVersion, (await Client.CoreV1.ReadNamespacedConfigMapAsync("bad-config", Ns)).Metadata.ResourceVersion);
        await Waiter.UntilAsync<Corev1Event, Corev1EventList>(
            (rv, watch, ct) => Client.CoreV1.ListNamespacedEventWithHttpMessagesAsync(Ns, resourceVersion: rv, watch: watch, cancellationToken: ct),
            e => e?.InvolvedObject.Name == "bad" && e.Reason == "DegradedTrue" && e.Type == "Warning",
            Waiter.DefaultTimeout,
            "the DegradedTrue warning event");

        // Fixing the spec clears Degraded and rolls the change out.
        await Models.UpdateSpecAsync(Client, Ns, "bad", s => s.Worker.Engine.BlockSize = 32);
        await Waiter.ModelAsync(Client, Ns, "bad", m => Models.HasCondition(m, ConditionTypes.Degraded, "False", generation: 3));
        await Waiter.StatefulSetAsync(Client, Ns, "bad-worker", s => s!.Spec.Replicas == 5);
    }

    [FakeOnlyFact]
    public async Task Injected_conflicts_on_children_and_status_converge()
    {
        var fake = _cluster.RequireFake;
        await Models.CreateAsync(Client, Models.New("clash", Ns));
        await Waiter.ModelAsync(Client, Ns, "clash", m => Models.HasCondition(m, ConditionTypes.Progressing, "True"));

        // A change of the engine settings rewrites the ConfigMap and, through its hash, both pod
        // templates: every kind the operator then replaces answers 409 three times. (Injected
        // before the test's own write, which touches only the model.)
        (string Group, string Plural)[] replaced = [("apps", "statefulsets"), ("apps", "deployments"), ("", "configmaps")];
        foreach (var (group, plural) in replaced)
        {
            fake.InjectConflicts(group, plural, 3);
        }

        await Models.UpdateSpecAsync(Client, Ns, "clash", s =>
        {
            s.Replicas = 4;
            s.Worker.Engine.BlockSize = 32;
        });

        await Waiter.StatefulSetAsync(Client, Ns, "clash-worker", s => s!.Spec.Replicas == 4);
        var converged = await Waiter.ModelAsync(Client, Ns, "clash", m => m!.Status?.ObservedGeneration == 2);
        Assert.All(replaced, type => Assert.Equal(0, fake.PendingConflicts(type.Group, type.Plural)));
        Assert.Contains("\"blockSize\": 32", (await Client.CoreV1.ReadNamespacedConfigMapAsync("clash-config", Ns)).Data["engine.json"], StringComparison.Ordinal);
        Assert.True(Models.HasCondition(converged, ConditionTypes.Degraded, "False", generation: 2));
        Assert.True(Models.HasCondition(converged, ConditionTypes.Progressing, "True", generation: 2));

        // The pods come up while the model's status writes answer 409 three times (the operator is
        // the only writer of the model now): the status still reaches Ready on this generation.
        fake.InjectConflicts(LongContextModel.Group, LongContextModel.Plural, 3);
        Models.MarkReady(_cluster, "clash");
        await Waiter.ModelAsync(Client, Ns, "clash", m => Models.HasCondition(m, ConditionTypes.Ready, "True", generation: 2) && Models.HasCondition(m, ConditionTypes.Progressing, "False", generation: 2));
        Assert.Equal(0, fake.PendingConflicts(LongContextModel.Group, LongContextModel.Plural));
    }

    [FakeOnlyFact]
    public async Task An_expired_watch_relists_and_sees_what_changed_meanwhile()
    {
        var fake = _cluster.RequireFake;
        await Models.CreateAsync(Client, Models.New("first", Ns));
        await Waiter.StatefulSetAsync(Client, Ns, "first-worker", s => s is not null);

        // Every informer past its first list, so the relist counted below is the 410's.
        await fake.WatchRequestsReached(3).WaitAsync(TimeSpan.FromSeconds(30));
        var listsBefore = fake.ListRequests;
        fake.ExpireWatches();
        await Models.CreateAsync(Client, Models.New("second", Ns));

        await Waiter.StatefulSetAsync(Client, Ns, "second-worker", s => s is not null);
        Assert.True(fake.ListRequests > listsBefore, "the operator should have relisted after 410");
    }

    [FakeOnlyFact]
    public async Task A_dropped_watch_resumes_from_its_version_without_relisting()
    {
        var fake = _cluster.RequireFake;
        await ResumesWithoutRelistingAsync("resume", fake.DropWatches);
    }

    [FakeOnlyFact]
    public async Task A_broken_watch_connection_resumes_from_its_version_without_relisting()
    {
        await ResumesWithoutRelistingAsync("broken", _cluster.RequireFake.BreakWatches);
    }

    /// <summary>Ends every watch with <paramref name="fault"/>; all three informers must watch again from
    /// their versions (no list) and still see the spec change made afterwards.</summary>
    private async Task ResumesWithoutRelistingAsync(string name, Action fault)
    {
        var fake = _cluster.RequireFake;
        await Models.CreateAsync(Client, Models.New(name, Ns));
        await Waiter.StatefulSetAsync(Client, Ns, name + "-worker", s => s is not null);
        // Every informer past its first list (it watches once it has listed): only then do the counts mean "no relist".
        await fake.WatchRequestsReached(3).WaitAsync(TimeSpan.FromSeconds(30));
        var listsBefore = fake.ListRequests;
        var watchesBefore = fake.WatchRequests;

        fault();
        await fake.WatchRequestsReached(watchesBefore + 3).WaitAsync(TimeSpan.FromSeconds(30));
        await Models.UpdateSpecAsync(Client, Ns, name, s => s.Replicas = 5);

        await Waiter.StatefulSetAsync(Client, Ns, name + "-worker", s => s!.Spec.Replicas == 5);
        Assert.True(listsBefore == fake.ListRequests, $"the informers relisted: {string.Join(", ", fake.ListLog.Skip(listsBefore))}");
    }

    [FakeOnlyFact]
    public async Task A_silent_watch_is_restarted_by_the_watchdog()
    {
        var fake = _cluster.RequireFake;
        await Models.CreateAsync(Client, Models.New("quiet", Ns));
        await Waiter.StatefulSetAsync(Client, Ns, "quiet-worker", s => s is not null);
        var watchesBefore = fake.WatchRequests;

        // Connections stay open but nothing (not even a bookmark) arrives any more: only the
        // watchdog (2 s in tests) can notice. All three informers must watch again.
        fake.StallWatches();
        await fake.WatchRequestsReached(watchesBefore + 3).WaitAsync(TimeSpan.FromSeconds(10));

        await Models.UpdateSpecAsync(Client, Ns, "quiet", s => s.Replicas = 3);
        await Waiter.StatefulSetAsync(Client, Ns, "quiet-worker", s => s!.Spec.Replicas == 3);
    }

    [Fact]
    public async Task Scaling_through_the_scale_subresource_resizes_the_workers()
    {
        await Models.CreateAsync(Client, Models.New("sized", Ns, replicas: 1));
        await Waiter.StatefulSetAsync(Client, Ns, "sized-worker", s => s?.Spec.Replicas == 1);

        await Client.CustomObjects.PatchNamespacedCustomObjectScaleAsync(
            new V1Patch("""{"spec":{"replicas":4}}""", V1Patch.PatchType.MergePatch), LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "sized");

        await Waiter.StatefulSetAsync(Client, Ns, "sized-worker", s => s!.Spec.Replicas == 4);
        var scale = await Client.CustomObjects.GetNamespacedCustomObjectScaleAsync<V1Scale>(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "sized");
        Assert.Equal(4, scale.Spec.Replicas);
    }

    [Fact]
    public async Task Deleting_the_model_removes_its_children()
    {
        await Models.CreateAsync(Client, Models.New("gone", Ns));
        await Waiter.StatefulSetAsync(Client, Ns, "gone-worker", s => s is not null);

        await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "gone");

        await Waiter.StatefulSetAsync(Client, Ns, "gone-worker", s => s is null);
        await Waiter.DeploymentAsync(Client, Ns, "gone-router", d => d is null);
    }
}
