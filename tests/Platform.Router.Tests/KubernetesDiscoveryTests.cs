// Kubernetes discovery end to end: the real router app (RouterApp.Build) with
// --discovery kubernetes watches EndpointSlices on the in-process fake API
// server (real REST + watch, driven through the real KubernetesClient), and
// its worker directory and pool follow the slices: serving endpoints join,
// not-serving, terminating and deleted ones leave; the watch survives a dropped
// connection (resume, no relist) and a 410 (relist). Also the readiness rule
// alone and the options' error messages.
using k8s;
using k8s.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Platform.Router.Configuration;
using Platform.Router.Discovery;
using Platform.Router.Policies;
using Platform.Router.Workers;
using Platform.Testing.Kubernetes;

namespace Platform.Router.Tests;

/// <summary>A fake API server with namespace "test", a kubeconfig for it and a client to write slices.</summary>
internal sealed class SliceCluster : IAsyncDisposable
{
    public const string Namespace = "test";
    public const string Service = "qwen-workers";

    private SliceCluster(FakeApiServer fake, string kubeconfig)
    {
        Fake = fake;
        KubeconfigPath = kubeconfig;
        Client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig));
    }

    public FakeApiServer Fake { get; }
    public string KubeconfigPath { get; }
    public IKubernetes Client { get; }

    public static async Task<SliceCluster> StartAsync()
    {
        var fake = await FakeApiServer.StartAsync();
        var path = await fake.WriteKubeconfigAsync("router-k8s-", "router", Namespace);
        var cluster = new SliceCluster(fake, path);
        await cluster.Client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = Namespace } });
        return cluster;
    }

    /// <summary>One slice of the worker Service with one endpoint per address, all on one gRPC port.</summary>
    public static V1EndpointSlice Slice(string name, int port, params (string Address, bool Serving, bool Terminating)[] endpoints) => new()
    {
        ApiVersion = "discovery.k8s.io/v1",
        Kind = "EndpointSlice",
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Namespace, Labels = new Dictionary<string, string> { [EndpointSliceWatcher.ServiceNameLabel] = Service } },
        AddressType = "IPv4",
        Ports = [new Discoveryv1EndpointPort { Name = "http", Port = 8080 }, new Discoveryv1EndpointPort { Name = "grpc", Port = port }],
        // As for the operator's headless Service (publishNotReadyAddresses): `ready` is always true, `serving` is the pod's readiness.
        Endpoints = [.. endpoints.Select(e => new V1Endpoint { Addresses = [e.Address], Conditions = new V1EndpointConditions { Ready = true, Serving = e.Serving, Terminating = e.Terminating } })],
    };

    public Task CreateAsync(V1EndpointSlice slice) => Client.DiscoveryV1.CreateNamespacedEndpointSliceAsync(slice, Namespace);

    public async Task ReplaceAsync(V1EndpointSlice slice)
    {
        var live = await Client.DiscoveryV1.ReadNamespacedEndpointSliceAsync(slice.Metadata.Name, Namespace);
        slice.Metadata.ResourceVersion = live.Metadata.ResourceVersion;
        await Client.DiscoveryV1.ReplaceNamespacedEndpointSliceAsync(slice, slice.Metadata.Name, Namespace);
    }

    public Task DeleteAsync(string name) => Client.DiscoveryV1.DeleteNamespacedEndpointSliceAsync(name, Namespace);

    /// <summary>The router app with Kubernetes discovery against this cluster, started on 127.0.0.1:0.</summary>
    public async Task<WebApplication> StartRouterAsync(params string[] extra)
    {
        var app = RouterApp.Build(
        [
            "--model", TestModels.TinyLlama, "--port", "0", "--discovery", "kubernetes", "--worker-service", Service,
            "--kubeconfig", KubeconfigPath, "--namespace", Namespace,
            "--Router:HealthPeriodMs", "200", "--Router:Kubernetes:ReconnectBaseMs", "50", "--Logging:LogLevel:Default", "Warning",
            .. extra,
        ]);
        await app.StartAsync();
        return app;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Fake.DisposeAsync();
        File.Delete(KubeconfigPath);
    }
}

public sealed class KubernetesDiscoveryTests
{
    private static string[] Known(WebApplication app) =>
        [.. app.Services.GetRequiredService<WorkerDirectory>().Connections.Select(c => c.State.Id)];

    private static string[] Pooled(WebApplication app) =>
        [.. app.Services.GetRequiredService<WorkerPool>().Current.Available.Select(w => w.Id)];

    [Fact]
    public async Task Serving_endpoints_join_the_pool_and_not_serving_terminating_or_deleted_ones_leave()
    {
        await using var cluster = await SliceCluster.StartAsync();
        await using var w1 = await TestWorkers.StartAsync(TestModels.TinyLlama);
        await using var w2 = await TestWorkers.StartAsync(TestModels.TinyLlama);
        string id1 = $"http://127.0.0.1:{w1.Port}", id2 = $"http://127.0.0.1:{w2.Port}";
        await using var app = await cluster.StartRouterAsync();
        Assert.Empty(Pooled(app));

        await cluster.CreateAsync(SliceCluster.Slice("qwen-workers-a", w1.Port, ("127.0.0.1", true, false)));
        await RouterHost.Eventually(() => Pooled(app).SequenceEqual([id1]), "worker 1 in the pool");

        // Loading (not serving yet): known to nobody, not in the pool.
        await cluster.CreateAsync(SliceCluster.Slice("qwen-workers-b", w2.Port, ("127.0.0.1", false, false)));
        await Task.Delay(600);
        Assert.Equal([id1], Known(app));
        Assert.Equal([id1], Pooled(app));

        await cluster.ReplaceAsync(SliceCluster.Slice("qwen-workers-b", w2.Port, ("127.0.0.1", true, false)));
        await RouterHost.Eventually(() => Pooled(app).Order(StringComparer.Ordinal).SequenceEqual(new[] { id1, id2 }.Order(StringComparer.Ordinal)), "both workers in the pool");

        // Worker 1's pod is terminating (SIGTERM, draining): it leaves although its process still answers healthy.
        await cluster.ReplaceAsync(SliceCluster.Slice("qwen-workers-a", w1.Port, ("127.0.0.1", true, true)));
        await RouterHost.Eventually(() => Pooled(app).SequenceEqual([id2]) && Known(app).SequenceEqual([id2]), "only worker 2 left");

        await cluster.DeleteAsync("qwen-workers-b");
        await RouterHost.Eventually(() => Pooled(app).Length == 0 && Known(app).Length == 0, "no worker left");
        using var http = new HttpClient();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, (await http.GetAsync(address + "/readyz")).StatusCode);
    }

    [Fact]
    public async Task The_watch_resumes_after_a_dropped_connection_and_relists_after_410()
    {
        await using var cluster = await SliceCluster.StartAsync();
        // Watches end server-side after 3 s, as the real server ends them after timeoutSeconds.
        await using var app = await cluster.StartRouterAsync("--Router:Kubernetes:WatchTimeoutSeconds", "3");
        var watcher = app.Services.GetRequiredService<EndpointSliceWatcher>();
        // Nothing listens on 127.0.0.2-4:9, so these stay known but never join the pool; membership of the
        // directory is what discovery decides.
        await cluster.CreateAsync(SliceCluster.Slice("s", 9, ("127.0.0.2", true, false)));
        await RouterHost.Eventually(() => Known(app).SequenceEqual(["http://127.0.0.2:9"]), "the first endpoint");
        Assert.Equal(1, watcher.Lists);

        // A dropped watch connection: resumed from the last version, no relist, nothing missed.
        int watches = cluster.Fake.WatchRequests;
        cluster.Fake.DropWatches();
        await cluster.Fake.WatchRequestsReached(watches + 1);
        await cluster.ReplaceAsync(SliceCluster.Slice("s", 9, ("127.0.0.2", true, false), ("127.0.0.3", true, false)));
        await RouterHost.Eventually(() => Known(app).SequenceEqual(["http://127.0.0.2:9", "http://127.0.0.3:9"]), "the second endpoint after the drop");
        Assert.Equal(1, watcher.Lists);

        // A change the open (stalled) watch does not deliver, then history compaction: when that watch
        // times out, resuming from the last version seen gets 410 Expired; the watcher relists and catches up.
        cluster.Fake.StallWatches();
        await cluster.ReplaceAsync(SliceCluster.Slice("s", 9, ("127.0.0.4", true, false)));
        cluster.Fake.CompactHistory();
        await RouterHost.Eventually(() => Known(app).SequenceEqual(["http://127.0.0.4:9"]), "the state after the relist");
        Assert.Equal(2, watcher.Lists);

        // And it keeps watching after the relist.
        await cluster.DeleteAsync("s");
        await RouterHost.Eventually(() => Known(app).Length == 0, "no endpoint after the delete");
    }

    [Fact]
    public void Serving_decides_not_ready_because_the_worker_service_publishes_not_ready_addresses()
    {
        var slice = SliceCluster.Slice("s", 50051, ("10.0.0.1", true, false), ("10.0.0.2", false, false), ("10.0.0.3", true, true));
        slice.Endpoints.Add(new V1Endpoint { Addresses = ["10.0.0.4"] });   // no conditions: ready by the API's rule
        slice.Endpoints.Add(new V1Endpoint { Addresses = ["10.0.0.5"], Conditions = new V1EndpointConditions { Ready = false } });
        var v6 = SliceCluster.Slice("v6", 50051, ("fd00::7", true, false));
        v6.AddressType = "IPv6";
        var fqdn = SliceCluster.Slice("fqdn", 50051, ("worker.example", true, false));
        fqdn.AddressType = "FQDN";
        var noGrpc = SliceCluster.Slice("other", 50051, ("10.0.0.9", true, false));
        noGrpc.Ports = [new Discoveryv1EndpointPort { Name = "http", Port = 8080 }];

        var found = ServingEndpoints.From([slice, v6, fqdn, noGrpc], "grpc").Select(u => u.ToString()).Order(StringComparer.Ordinal);

        Assert.Equal(["http://10.0.0.1:50051/", "http://10.0.0.4:50051/", "http://[fd00::7]:50051/"], found);
    }

    [Fact]
    public void Kubernetes_discovery_options_say_what_to_fix()
    {
        static string Errors(params string[] args) =>
            Assert.Throws<RouterConfigurationException>(() => RouterApp.Build(["--model", TestModels.TinyLlama, .. args])).Message;

        var missing = Errors("--discovery", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig");
        Assert.Contains("pass --worker-service NAME", missing, StringComparison.Ordinal);
        Assert.Contains("Kubeconfig '/nonexistent/kubeconfig' does not exist", missing, StringComparison.Ordinal);

        var both = Errors("--discovery", "kubernetes", "--worker-service", "Bad_Name", "--workers", "http://127.0.0.1:1", "--worker-port-name", "");
        Assert.Contains("drop --workers", both, StringComparison.Ordinal);
        Assert.Contains("'Bad_Name' is not a Service name", both, StringComparison.Ordinal);
        Assert.Contains("--worker-port-name", both, StringComparison.Ordinal);
        // Not in a pod here: no service-account token, so a kubeconfig is required.
        Assert.Contains("pass --kubeconfig PATH", both, StringComparison.Ordinal);

        Assert.Contains("use --discovery static (with --workers) or --discovery kubernetes", Errors("--discovery", "dns"), StringComparison.Ordinal);
        Assert.Contains("--discovery kubernetes --worker-service NAME", Errors(), StringComparison.Ordinal);
    }
}
