// Protocol tests of the fake API server through the real KubernetesClient: the behaviours the
// operator depends on (optimistic concurrency, watch replay, bookmarks, 410, subresources,
// finalizers, garbage collection, selectors, merge patch). Most also pass on a real cluster.
using System.Net;
using System.Text.Json.Nodes;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class FakeApiServerTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;

    private IKubernetes Client => _cluster.Client;

    private string Ns => _cluster.Namespace;

    public async Task InitializeAsync() => _cluster = await TestCluster.StartAsync();

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task Update_with_a_stale_resourceVersion_gets_409()
    {
        var created = await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("cm", new() { ["a"] = "1" }), Ns);
        var stale = await Client.CoreV1.ReadNamespacedConfigMapAsync("cm", Ns);
        created.Data["a"] = "2";
        var updated = await Client.CoreV1.ReplaceNamespacedConfigMapAsync(created, "cm", Ns);
        Assert.NotEqual(created.Metadata.ResourceVersion, updated.Metadata.ResourceVersion);

        stale.Data["a"] = "3";
        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => Client.CoreV1.ReplaceNamespacedConfigMapAsync(stale, "cm", Ns));
        Assert.Equal(HttpStatusCode.Conflict, ex.Response.StatusCode);
        Assert.Equal("2", (await Client.CoreV1.ReadNamespacedConfigMapAsync("cm", Ns)).Data["a"]);
    }

    [Fact]
    public async Task Create_of_an_existing_name_gets_409_AlreadyExists()
    {
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("dup", []), Ns);
        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("dup", []), Ns));
        Assert.Equal(HttpStatusCode.Conflict, ex.Response.StatusCode);
        Assert.Contains("AlreadyExists", ex.Response.Content, StringComparison.Ordinal);
    }

    [FakeOnlyFact]
    public async Task Watch_replays_from_a_resourceVersion_and_sends_bookmarks()
    {
        _cluster.RequireFake.BookmarkInterval = TimeSpan.FromMilliseconds(100);
        var first = await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("one", []), Ns);
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("two", []), Ns);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var seen = new List<(WatchEventType Type, string? Name)>();
#pragma warning disable CS0618
        var events = Client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(Ns, allowWatchBookmarks: true, resourceVersion: first.Metadata.ResourceVersion, watch: true, cancellationToken: cts.Token)
            .WatchAsync<V1ConfigMap, V1ConfigMapList>(cancellationToken: cts.Token);
#pragma warning restore CS0618
        await foreach (var (type, item) in events)
        {
            seen.Add((type, item.Metadata.Name));
            if (type == WatchEventType.Bookmark)
            {
                Assert.True(long.Parse(item.Metadata.ResourceVersion, System.Globalization.CultureInfo.InvariantCulture) > long.Parse(first.Metadata.ResourceVersion, System.Globalization.CultureInfo.InvariantCulture));
                break;
            }
        }

        Assert.Equal([(WatchEventType.Added, "two"), (WatchEventType.Bookmark, null)], seen);
    }

    [FakeOnlyFact]
    public async Task Watch_from_a_compacted_resourceVersion_gets_410_Expired()
    {
        var first = await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("old", []), Ns);
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("newer", []), Ns);
        _cluster.RequireFake.CompactHistory();
        Exception? error = null;
        var count = 0;
#pragma warning disable CS0618
        var events = Client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(Ns, resourceVersion: first.Metadata.ResourceVersion, watch: true)
            .WatchAsync<V1ConfigMap, V1ConfigMapList>(ex => error = ex);
#pragma warning restore CS0618
        await foreach (var _ in events)
        {
            count++;
        }

        Assert.Equal(0, count);
        var status = Assert.IsType<KubernetesException>(error).Status;
        Assert.Equal(410, status.Code);
        Assert.Equal("Expired", status.Reason);
    }

    [FakeOnlyFact]
    public async Task Compaction_expires_even_a_watch_from_the_newest_resourceVersion()
    {
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("newest", []), Ns);
        // A list's version is the newest one: what a client kept current by bookmarks holds.
        var newest = (await Client.CoreV1.ListNamespacedConfigMapAsync(Ns)).Metadata.ResourceVersion;
        _cluster.RequireFake.ExpireWatches();
        Exception? error = null;
#pragma warning disable CS0618
        var events = Client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(Ns, resourceVersion: newest, watch: true, timeoutSeconds: 5)
            .WatchAsync<V1ConfigMap, V1ConfigMapList>(ex => error = ex);
#pragma warning restore CS0618
        await foreach (var _ in events)
        {
        }

        Assert.Equal(410, Assert.IsType<KubernetesException>(error).Status.Code);
    }

    [Fact]
    public async Task Status_subresource_is_split_from_the_main_resource_and_generation_tracks_spec()
    {
        var model = await Models.CreateAsync(Client, Models.New("split", Ns));
        Assert.Equal(1, model.Metadata.Generation);
        Assert.Null(model.Status);

        model.Status = new LongContextModelStatus { ReadyReplicas = 7 };
        model = await Models.ReplaceAsync(Client, model);
        Assert.Null(model.Status);
        Assert.Equal(1, model.Metadata.Generation);

        model.Status = new LongContextModelStatus { ReadyReplicas = 5 };
        model.Spec.Replicas = 9;
        model = await Client.CustomObjects.ReplaceNamespacedCustomObjectStatusAsync<LongContextModel>(model, LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "split");
        Assert.Equal(5, model.Status!.ReadyReplicas);
        Assert.Equal(2, model.Spec.Replicas);
        Assert.Equal(1, model.Metadata.Generation);

        model.Spec.Replicas = 3;
        model = await Models.ReplaceAsync(Client, model);
        Assert.Equal(2, model.Metadata.Generation);
        Assert.Equal(5, model.Status!.ReadyReplicas);
    }

    [Fact]
    public async Task Finalizers_hold_a_delete_until_removed()
    {
        var cm = ConfigMap("held", []);
        cm.Metadata.Finalizers = ["test.longcontext.dev/hold"];
        await Client.CoreV1.CreateNamespacedConfigMapAsync(cm, Ns);
        await Client.CoreV1.DeleteNamespacedConfigMapAsync("held", Ns);

        var marked = await Client.CoreV1.ReadNamespacedConfigMapAsync("held", Ns);
        Assert.NotNull(marked.Metadata.DeletionTimestamp);

        marked.Metadata.Finalizers = [];
        await Client.CoreV1.ReplaceNamespacedConfigMapAsync(marked, "held", Ns);
        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => Client.CoreV1.ReadNamespacedConfigMapAsync("held", Ns));
        Assert.Equal(HttpStatusCode.NotFound, ex.Response.StatusCode);
    }

    [Fact]
    public async Task Deleting_an_owner_garbage_collects_its_dependents()
    {
        var owner = await Models.CreateAsync(Client, Models.New("owner", Ns));
        var dependent = ConfigMap("dependent", []);
        dependent.Metadata.OwnerReferences = [new V1OwnerReference { ApiVersion = owner.ApiVersion, Kind = owner.Kind, Name = owner.Metadata.Name, Uid = owner.Metadata.Uid }];
        await Client.CoreV1.CreateNamespacedConfigMapAsync(dependent, Ns);
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("bystander", []), Ns);

        await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "owner");

        // A real cluster's garbage collector is asynchronous: wait for it by watch.
        await Waiter.UntilAsync<V1ConfigMap, V1ConfigMapList>(
            (rv, watch, ct) => Client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(Ns, fieldSelector: "metadata.name=dependent", resourceVersion: rv, watch: watch, cancellationToken: ct),
            cm => cm is null, Waiter.DefaultTimeout, "dependent collected");
        Assert.NotNull(await Client.CoreV1.ReadNamespacedConfigMapAsync("bystander", Ns));
    }

    [Fact]
    public async Task Label_selectors_filter_lists()
    {
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("a", [], new() { ["tier"] = "gpu", ["zone"] = "1" }), Ns);
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("b", [], new() { ["tier"] = "cpu", ["zone"] = "2" }), Ns);
        await Client.CoreV1.CreateNamespacedConfigMapAsync(ConfigMap("c", [], new() { ["tier"] = "gpu" }), Ns);

        async Task<string> Names(string selector) =>
            string.Join(",", (await Client.CoreV1.ListNamespacedConfigMapAsync(Ns, labelSelector: selector)).Items.Select(i => i.Metadata.Name).Where(n => n.Length == 1).Order(StringComparer.Ordinal));

        Assert.Equal("a,c", await Names("tier=gpu"));
        Assert.Equal("b", await Names("tier!=gpu"));
        Assert.Equal("a,b", await Names("zone"));
        Assert.Equal("c", await Names("tier,!zone"));
        Assert.Equal("a,b", await Names("zone in (1,2)"));
        // notin also matches objects without the label, as in Kubernetes.
        Assert.Equal("a,c", await Names("tier=gpu,zone notin (2)"));
    }

    [Fact]
    public async Task Merge_patch_and_the_scale_subresource_work()
    {
        await Models.CreateAsync(Client, Models.New("scaled", Ns));
        var patch = new V1Patch("""{"metadata":{"labels":{"team":"infra"}},"spec":{"router":{"policy":"RoundRobin"}}}""", V1Patch.PatchType.MergePatch);
        var patched = await Client.CustomObjects.PatchNamespacedCustomObjectAsync<LongContextModel>(patch, LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "scaled");
        Assert.Equal("infra", patched.Metadata.Labels["team"]);
        Assert.Equal("RoundRobin", patched.Spec.Router.Policy);
        Assert.Equal("pvc://models/qwen2.5-7b-1m", patched.Spec.Model.Source);

        var scale = await Client.CustomObjects.PatchNamespacedCustomObjectScaleAsync<V1Scale>(
            new V1Patch("""{"spec":{"replicas":5}}""", V1Patch.PatchType.MergePatch), LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "scaled");
        Assert.Equal(5, scale.Spec.Replicas);
        Assert.Equal(5, (await Models.GetAsync(Client, Ns, "scaled")).Spec.Replicas);
        var read = await Client.CustomObjects.GetNamespacedCustomObjectScaleAsync<V1Scale>(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "scaled");
        Assert.Equal(5, read.Spec.Replicas);
    }

    [FakeOnlyFact]
    public async Task Discovery_lists_the_crd_with_its_short_name_and_subresources()
    {
        using var http = new HttpClient { BaseAddress = new Uri(_cluster.RequireFake.Url) };
        var groups = JsonNode.Parse(await http.GetStringAsync(new Uri("/apis", UriKind.Relative)))!;
        Assert.Contains(groups["groups"]!.AsArray(), g => g!["name"]!.GetValue<string>() == LongContextModel.Group);
        var resources = JsonNode.Parse(await http.GetStringAsync(new Uri($"/apis/{LongContextModel.ApiGroupVersion}", UriKind.Relative)))!["resources"]!.AsArray();
        var main = resources.Single(r => r!["name"]!.GetValue<string>() == LongContextModel.Plural)!;
        Assert.Equal("lcm", main["shortNames"]![0]!.GetValue<string>());
        Assert.Contains(resources, r => r!["name"]!.GetValue<string>() == "longcontextmodels/scale");
        Assert.Contains(resources, r => r!["name"]!.GetValue<string>() == "longcontextmodels/status");
    }

    private V1ConfigMap ConfigMap(string name, Dictionary<string, string> data, Dictionary<string, string>? labels = null) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns, Labels = labels },
        Data = data,
    };
}
