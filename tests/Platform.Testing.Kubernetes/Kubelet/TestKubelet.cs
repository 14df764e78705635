// A one-node "cluster" beside the fake API server: it plays the parts of Kubernetes that turn
// workloads into running processes, so the operator's objects run as deployed.
//   * StatefulSet and Deployment controllers: Pod objects from each template (StatefulSet pods
//     named NAME-ORDINAL with hostname/subdomain, Deployment pods NAME-HASH-XXXXX), replaced when
//     the template changes, removed past the replica count (highest ordinal first); workload
//     status (replicas, readyReplicas, ...) written back.
//   * The kubelet: runs every pod of the namespace as local processes (PodRuntime; init
//     containers first, each to completion, then the main containers), writes pod status, and on a pod's deletion stops it gracefully (SIGTERM, SIGKILL after the pod's
//     terminationGracePeriodSeconds) while the pod shows as terminating. Pods it creates carry
//     a finalizer that it removes once the processes are gone, as the real kubelet holds a
//     deleted pod until its containers stopped.
//   * The EndpointSlice controller (ready/serving/terminating per endpoint,
//     publishNotReadyAddresses honoured) and kube-proxy for ClusterIP Services (ServiceProxy).
//   * Cluster DNS: pod names under their headless Service and Service names, see ClusterNetwork.
// It does not schedule (every pod lands here), pull images (they map to local binaries),
// enforce resources or security contexts.
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes.Kubelet;

public sealed class TestKubelet : IAsyncDisposable
{
    public const string PodFinalizer = "test-kubelet.platform.dev/containers";
    private const string RevisionLabel = "controller-revision-hash";
    private readonly FakeApiServer _api;
    private readonly TestKubeletOptions _options;
    private readonly ResourceType _pods, _statefulSets, _deployments, _services, _slices;
    private readonly Dictionary<string, PodRuntime> _running = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ServiceProxy> _proxies = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _lastPodStatus = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly Lock _snapshotLock = new();
    private Exception? _lastError;

    private TestKubelet(FakeApiServer api, TestKubeletOptions options)
    {
        _api = api;
        _options = options;
        Directory.CreateDirectory(options.StateDirectory);
        Network = new ClusterNetwork(Path.Combine(options.StateDirectory, "hosts"));
        _pods = api.Types.FindByKey("/pods")!;
        _statefulSets = api.Types.FindByKey("apps/statefulsets")!;
        _deployments = api.Types.FindByKey("apps/deployments")!;
        _services = api.Types.FindByKey("/services")!;
        _slices = api.Types.FindByKey("discovery.k8s.io/endpointslices")!;
        api.Store.Changed += OnChanged;
        _loop = Task.Run(LoopAsync);
    }

    public ClusterNetwork Network { get; }

    public TestKubeletOptions Options => _options;

    /// <summary>The last error of a sync pass, if the latest pass failed (shown by tests that time out).</summary>
    public Exception? LastError => _lastError;

    public static TestKubelet Start(FakeApiServer api, TestKubeletOptions options)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("the test kubelet runs pods with Linux namespaces (unshare)");
        return new TestKubelet(api, options);
    }

    /// <summary>The pods running here now (name, IP, ready, restarts).</summary>
    public IReadOnlyList<(string Name, string Ip, bool Ready, int Restarts, bool Terminating)> Pods
    {
        get
        {
            lock (_snapshotLock) return [.. _running.Values.Select(p => (p.Name, p.Ip, p.Ready, p.Containers.Sum(c => c.RestartCount), p.Terminating))];
        }
    }

    /// <summary>Process ids of every container process running now (for leak checks).</summary>
    public IReadOnlyList<int> Pids
    {
        get
        {
            lock (_snapshotLock) return [.. _running.Values.SelectMany(p => p.InitContainers.Concat(p.Containers)).Select(c => c.Pid).OfType<int>()];
        }
    }

    /// <summary>Sends a signal to a pod's (first) container process; false when it is not running.</summary>
    public bool Signal(string podName, int signal)
    {
        lock (_snapshotLock) return _running.TryGetValue(podName, out var pod) && pod.Containers.Count > 0 && pod.Containers[0].Signal(signal);
    }

    /// <summary>Every container log of the pods ever run by this kubelet (head and tail of each), for a failing test's message.</summary>
    public string Logs(int tailChars = 4000)
    {
        var sb = new StringBuilder();
        var root = Path.Combine(_options.StateDirectory, "pods");
        if (!Directory.Exists(root)) return "";
        foreach (var file in Directory.EnumerateFiles(root, "*.log", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string text = File.ReadAllText(file);
            sb.Append("==== ").Append(Path.GetRelativePath(root, file)).Append('\n')
              .Append(text.Length > 2 * tailChars ? text[..tailChars] + "\n...\n" + text[^tailChars..] : text).Append('\n');
        }
        return sb.ToString();
    }

    public string Log(string podName)
    {
        lock (_snapshotLock) return _running.TryGetValue(podName, out var pod) ? string.Concat(pod.InitContainers.Concat(pod.Containers).Select(c => c.Log())) : "";
    }

    private void OnChanged()
    {
        if (_wake.CurrentCount == 0) _wake.Release();
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                Sync();
                _lastError = null;
            }
            catch (Exception e) when (e is ApiException or InvalidOperationException or IOException or FormatException or KeyNotFoundException or NullReferenceException)
            {
                _lastError = e;
            }
            try
            {
                await _wake.WaitAsync(TimeSpan.FromMilliseconds(200), _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private List<JsonObject> List(ResourceType type) => _api.Store.List(type, _options.Namespace, _ => true).Items;

    private void Sync()
    {
        foreach (var sts in List(_statefulSets)) SyncStatefulSet(sts);
        foreach (var deploy in List(_deployments)) SyncDeployment(deploy);
        var pods = List(_pods);
        SyncPods(pods);
        pods = List(_pods);
        foreach (var sts in List(_statefulSets)) WriteWorkloadStatus(_statefulSets, sts, pods);
        foreach (var deploy in List(_deployments)) WriteWorkloadStatus(_deployments, deploy, pods);
        var services = List(_services);
        SyncEndpoints(services, pods);
        SyncServiceProxies(services, pods);
        SyncDns(services, pods);
    }

    // ---- workload controllers ----

    private static string Revision(JsonObject workload)
    {
        var template = workload["spec"]!["template"]!.ToJsonString();
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(template)))[..10];
    }

    private List<JsonObject> OwnedPods(JsonObject owner) =>
        [.. List(_pods).Where(p => (p["metadata"]!["ownerReferences"] as JsonArray ?? []).Any(o => JsonTools.Str(o, "uid") == JsonTools.Str(owner, "metadata.uid")))];

    private static int Replicas(JsonObject workload) => workload["spec"]?["replicas"] is { } r ? (int)JsonTools.Long(r) : 1;

    private void SyncStatefulSet(JsonObject sts)
    {
        string name = JsonTools.Str(sts, "metadata.name")!;
        int replicas = Replicas(sts);
        string revision = Revision(sts);
        var owned = OwnedPods(sts).ToDictionary(p => JsonTools.Str(p, "metadata.name")!, StringComparer.Ordinal);
        foreach (var (podName, pod) in owned)
        {
            bool deleting = JsonTools.Str(pod, "metadata.deletionTimestamp") is not null;
            int ordinal = int.TryParse(podName[(name.Length + 1)..], CultureInfo.InvariantCulture, out var o) ? o : int.MaxValue;
            if (!deleting && (ordinal >= replicas || JsonTools.Labels(pod).GetValueOrDefault(RevisionLabel) != revision))
                DeletePod(podName);
        }
        for (int i = 0; i < replicas; i++)
        {
            string podName = $"{name}-{i}";
            if (owned.ContainsKey(podName)) continue;
            var pod = NewPod(sts, podName, revision);
            pod["metadata"]!["labels"]!["statefulset.kubernetes.io/pod-name"] = podName;
            pod["metadata"]!["labels"]!["apps.kubernetes.io/pod-index"] = i.ToString(CultureInfo.InvariantCulture);
            pod["spec"]!["hostname"] = podName;
            if (JsonTools.Str(sts, "spec.serviceName") is { Length: > 0 } service) pod["spec"]!["subdomain"] = service;
            CreatePod(pod);
        }
    }

    private void SyncDeployment(JsonObject deploy)
    {
        string name = JsonTools.Str(deploy, "metadata.name")!;
        int replicas = Replicas(deploy);
        string revision = Revision(deploy);
        var live = OwnedPods(deploy).Where(p => JsonTools.Str(p, "metadata.deletionTimestamp") is null).ToList();
        // Recreate: pods of an old template go first, then the count is made up with new ones.
        foreach (var pod in live.Where(p => JsonTools.Labels(p).GetValueOrDefault(RevisionLabel) != revision)) DeletePod(JsonTools.Str(pod, "metadata.name")!);
        var current = live.Where(p => JsonTools.Labels(p).GetValueOrDefault(RevisionLabel) == revision).OrderBy(p => JsonTools.Str(p, "metadata.creationTimestamp"), StringComparer.Ordinal).ToList();
        foreach (var extra in current.Skip(replicas)) DeletePod(JsonTools.Str(extra, "metadata.name")!);
        for (int i = current.Count; i < replicas; i++)
            CreatePod(NewPod(deploy, $"{name}-{revision}-{Guid.NewGuid().ToString("N")[..5]}", revision));
    }

    private static JsonObject NewPod(JsonObject owner, string name, string revision)
    {
        var template = owner["spec"]!["template"]!.DeepClone().AsObject();
        var meta = template["metadata"] as JsonObject ?? new JsonObject();
        var labels = meta["labels"] as JsonObject ?? new JsonObject();
        labels[RevisionLabel] = revision;
        return new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Pod",
            ["metadata"] = new JsonObject
            {
                ["name"] = name,
                ["labels"] = labels.DeepClone(),
                ["annotations"] = meta["annotations"]?.DeepClone(),
                ["finalizers"] = new JsonArray(PodFinalizer),
                ["ownerReferences"] = new JsonArray(new JsonObject
                {
                    ["apiVersion"] = owner["apiVersion"]!.GetValue<string>(),
                    ["kind"] = owner["kind"]!.GetValue<string>(),
                    ["name"] = JsonTools.Str(owner, "metadata.name"),
                    ["uid"] = JsonTools.Str(owner, "metadata.uid"),
                    ["controller"] = true,
                    ["blockOwnerDeletion"] = true,
                }),
            },
            ["spec"] = template["spec"]!.DeepClone(),
        };
    }

    private void CreatePod(JsonObject pod)
    {
        try
        {
            _api.Store.Create(_pods, _options.Namespace, pod);
        }
        catch (ApiException e) when (e.Code == 409)
        {
            // The previous pod of that name is still terminating: created on a later pass.
        }
    }

    private void DeletePod(string name)
    {
        try
        {
            _api.Store.Delete(_pods, _options.Namespace, name, orphan: false);
        }
        catch (ApiException e) when (e.Code == 404)
        {
            // Already gone.
        }
    }

    private void WriteWorkloadStatus(ResourceType type, JsonObject workload, List<JsonObject> pods)
    {
        string uid = JsonTools.Str(workload, "metadata.uid")!;
        string revision = Revision(workload);
        var owned = pods.Where(p => (p["metadata"]!["ownerReferences"] as JsonArray ?? []).Any(o => JsonTools.Str(o, "uid") == uid)).ToList();
        bool IsReady(JsonObject p) => (p["status"]?["conditions"] as JsonArray ?? []).Any(c => JsonTools.Str(c, "type") == "Ready" && JsonTools.Str(c, "status") == "True");
        int ready = owned.Count(IsReady);
        int updated = owned.Count(p => JsonTools.Labels(p).GetValueOrDefault(RevisionLabel) == revision);
        var status = new JsonObject
        {
            ["observedGeneration"] = JsonTools.Long(workload["metadata"]!["generation"]),
            ["replicas"] = owned.Count,
            ["readyReplicas"] = ready,
            ["availableReplicas"] = ready,
            ["updatedReplicas"] = updated,
        };
        if (type == _statefulSets)
        {
            status["currentReplicas"] = updated;
            status["currentRevision"] = revision;
            status["updateRevision"] = revision;
        }
        else
        {
            status["unavailableReplicas"] = Math.Max(0, Replicas(workload) - ready);
        }
        if (!JsonNode.DeepEquals(workload["status"], status))
            _api.Store.Update(type, _options.Namespace, JsonTools.Str(workload, "metadata.name")!, new JsonObject { ["status"] = status }, statusOnly: true);
    }

    // ---- the kubelet ----

    private void SyncPods(List<JsonObject> pods)
    {
        var present = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pod in pods)
        {
            string name = JsonTools.Str(pod, "metadata.name")!;
            string uid = JsonTools.Str(pod, "metadata.uid")!;
            present.Add(name);
            PodRuntime? runtime;
            lock (_snapshotLock) _running.TryGetValue(name, out runtime);
            if (runtime is not null && runtime.Uid != uid)
            {
                // A new pod of the same name: the old one's processes must go first.
                _ = runtime.TerminateAsync(Grace(pod));
                if (!runtime.Terminated) continue;
                Forget(name);
                runtime = null;
            }
            bool deleting = JsonTools.Str(pod, "metadata.deletionTimestamp") is not null;
            if (runtime is null)
            {
                if (deleting)
                {
                    RemoveFinalizer(pod);
                    continue;
                }
                runtime = PodRuntime.Start(pod, Network.PodIp(name), _api, Network, _options);
                lock (_snapshotLock) _running[name] = runtime;
            }
            if (deleting)
            {
                _ = runtime.TerminateAsync(Grace(pod));
                if (runtime.Terminated)
                {
                    Forget(name);
                    RemoveFinalizer(pod);
                    continue;
                }
            }
            var status = runtime.Status(pod);
            var text = status.ToJsonString();
            if (_lastPodStatus.GetValueOrDefault(name) != text)
            {
                _api.Store.Update(_pods, _options.Namespace, name, new JsonObject { ["status"] = status }, statusOnly: true);
                _lastPodStatus[name] = text;
            }
        }
        // Pods removed outright (garbage collection of a deleted workload): stop what still runs.
        List<string> gone;
        lock (_snapshotLock) gone = [.. _running.Keys.Where(n => !present.Contains(n))];
        foreach (var name in gone)
        {
            PodRuntime runtime;
            lock (_snapshotLock) runtime = _running[name];
            _ = runtime.TerminateAsync(TimeSpan.FromSeconds(30));
            if (runtime.Terminated) Forget(name);
        }
    }

    private void Forget(string name)
    {
        lock (_snapshotLock) _running.Remove(name);
        _lastPodStatus.Remove(name);
        Network.ReleasePod(name);
    }

    private static TimeSpan Grace(JsonObject pod) =>
        TimeSpan.FromSeconds(pod["spec"]?["terminationGracePeriodSeconds"] is { } g ? JsonTools.Long(g) : 30);

    private void RemoveFinalizer(JsonObject pod)
    {
        var finalizers = pod["metadata"]!["finalizers"] as JsonArray;
        if (finalizers is null || !finalizers.Any(f => f?.GetValue<string>() == PodFinalizer)) return;
        var next = pod.DeepClone().AsObject();
        next["metadata"]!["finalizers"] = new JsonArray([.. finalizers.Where(f => f?.GetValue<string>() != PodFinalizer).Select(f => f!.DeepClone())]);
        next["metadata"]!.AsObject().Remove("resourceVersion");
        try
        {
            _api.Store.Update(_pods, _options.Namespace, JsonTools.Str(pod, "metadata.name")!, next, statusOnly: false);
        }
        catch (ApiException e) when (e.Code == 404)
        {
            // Gone already.
        }
    }

    // ---- endpoints, kube-proxy, DNS ----

    private static bool Selects(JsonObject service, JsonObject pod)
    {
        if (service["spec"]?["selector"] is not JsonObject selector || selector.Count == 0) return false;
        var labels = JsonTools.Labels(pod);
        return selector.All(kv => labels.GetValueOrDefault(kv.Key) == kv.Value?.GetValue<string>());
    }

    private static bool PodReady(JsonObject pod) =>
        (pod["status"]?["conditions"] as JsonArray ?? []).Any(c => JsonTools.Str(c, "type") == "Ready" && JsonTools.Str(c, "status") == "True");

    private static int TargetPort(JsonObject pod, JsonNode? targetPort, int port)
    {
        if (targetPort is null) return port;
        if (targetPort is JsonValue v && v.TryGetValue<int>(out var n)) return n;
        string name = targetPort.GetValue<string>();
        if (int.TryParse(name, CultureInfo.InvariantCulture, out n)) return n;
        foreach (var c in (pod["spec"]!["containers"] as JsonArray ?? []).OfType<JsonObject>())
            foreach (var p in (c["ports"] as JsonArray ?? []).OfType<JsonObject>())
                if (JsonTools.Str(p, "name") == name) return (int)JsonTools.Long(p["containerPort"]);
        return -1;
    }

    private void SyncEndpoints(List<JsonObject> services, List<JsonObject> pods)
    {
        foreach (var service in services)
        {
            if (service["spec"]?["selector"] is not JsonObject { Count: > 0 }) continue;
            string svc = JsonTools.Str(service, "metadata.name")!;
            bool publishNotReady = service["spec"]?["publishNotReadyAddresses"]?.GetValue<bool>() == true;
            var members = pods.Where(p => Selects(service, p) && JsonTools.Str(p, "status.podIP") is not null).ToList();
            var ports = (service["spec"]!["ports"] as JsonArray ?? []).OfType<JsonObject>().ToList();
            var endpoints = new JsonArray();
            foreach (var pod in members)
            {
                bool terminating = JsonTools.Str(pod, "metadata.deletionTimestamp") is not null;
                bool ready = PodReady(pod);
                var ep = new JsonObject
                {
                    ["addresses"] = new JsonArray(JsonTools.Str(pod, "status.podIP")!),
                    ["conditions"] = new JsonObject { ["ready"] = (ready || publishNotReady) && !terminating, ["serving"] = ready || publishNotReady, ["terminating"] = terminating },
                    ["nodeName"] = "test-node",
                    ["targetRef"] = new JsonObject { ["kind"] = "Pod", ["namespace"] = _options.Namespace, ["name"] = JsonTools.Str(pod, "metadata.name"), ["uid"] = JsonTools.Str(pod, "metadata.uid") },
                };
                if (JsonTools.Str(pod, "spec.subdomain") == svc && JsonTools.Str(pod, "spec.hostname") is { } hostname) ep["hostname"] = hostname;
                endpoints.Add(ep);
            }
            var slicePorts = new JsonArray([.. ports.Select(p => (JsonNode)new JsonObject
            {
                ["name"] = JsonTools.Str(p, "name") ?? "",
                ["port"] = members.Count > 0 ? TargetPort(members[0], p["targetPort"], (int)JsonTools.Long(p["port"])) : (int)JsonTools.Long(p["port"]),
                ["protocol"] = JsonTools.Str(p, "protocol") ?? "TCP",
            })]);
            string sliceName = svc + "-tk";
            var slice = new JsonObject
            {
                ["apiVersion"] = "discovery.k8s.io/v1",
                ["kind"] = "EndpointSlice",
                ["metadata"] = new JsonObject
                {
                    ["name"] = sliceName,
                    ["labels"] = new JsonObject { ["kubernetes.io/service-name"] = svc, ["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io" },
                    ["ownerReferences"] = new JsonArray(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Service", ["name"] = svc, ["uid"] = JsonTools.Str(service, "metadata.uid"), ["controller"] = true }),
                },
                ["addressType"] = "IPv4",
                ["endpoints"] = endpoints,
                ["ports"] = slicePorts,
            };
            var existing = _api.Store.Get(_slices, _options.Namespace, sliceName);
            if (existing is null)
            {
                _api.Store.Create(_slices, _options.Namespace, slice);
            }
            else if (!JsonNode.DeepEquals(existing["endpoints"], endpoints) || !JsonNode.DeepEquals(existing["ports"], slicePorts))
            {
                _api.Store.Update(_slices, _options.Namespace, sliceName, slice, statusOnly: false);
            }
        }
    }

    private void SyncServiceProxies(List<JsonObject> services, List<JsonObject> pods)
    {
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var service in services)
        {
            if (JsonTools.Str(service, "spec.clusterIP") == "None" || service["spec"]?["selector"] is not JsonObject { Count: > 0 }) continue;
            string svc = JsonTools.Str(service, "metadata.name")!;
            string ip = Network.ServiceIp(_options.Namespace + "/" + svc);
            foreach (var port in (service["spec"]!["ports"] as JsonArray ?? []).OfType<JsonObject>())
            {
                int number = (int)JsonTools.Long(port["port"]);
                string key = $"{svc}:{number}";
                wanted.Add(key);
                if (!_proxies.TryGetValue(key, out var proxy)) _proxies[key] = proxy = new ServiceProxy(ip, number);
                proxy.SetEndpoints([.. pods.Where(p => Selects(service, p) && PodReady(p) && JsonTools.Str(p, "metadata.deletionTimestamp") is null)
                    .Select(p => new IPEndPoint(IPAddress.Parse(JsonTools.Str(p, "status.podIP")!), TargetPort(p, port["targetPort"], number)))
                    .Where(e => e.Port > 0)]);
            }
        }
        foreach (var key in _proxies.Keys.Where(k => !wanted.Contains(k)).ToList())
        {
            _ = _proxies[key].DisposeAsync().AsTask();
            _proxies.Remove(key);
        }
    }

    private void SyncDns(List<JsonObject> services, List<JsonObject> pods)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        string ns = _options.Namespace;
        void Add(string name, string ip)
        {
            foreach (var n in new[] { name, $"{name}.{ns}", $"{name}.{ns}.svc", $"{name}.{ns}.svc.cluster.local" }) names[n] = ip;
        }
        foreach (var service in services)
        {
            string svc = JsonTools.Str(service, "metadata.name")!;
            if (JsonTools.Str(service, "spec.clusterIP") != "None") Add(svc, Network.ServiceIp(ns + "/" + svc));
        }
        foreach (var pod in pods)
        {
            if (JsonTools.Str(pod, "status.podIP") is not { } ip) continue;
            if (JsonTools.Str(pod, "spec.hostname") is { } host && JsonTools.Str(pod, "spec.subdomain") is { } sub) Add($"{host}.{sub}", ip);
        }
        Network.SetNames(names);
    }

    public async ValueTask DisposeAsync()
    {
        _api.Store.Changed -= OnChanged;
        await _stop.CancelAsync().ConfigureAwait(false);
        try { await _loop.ConfigureAwait(false); } catch (OperationCanceledException) { /* stopping */ }
        List<PodRuntime> running;
        lock (_snapshotLock) running = [.. _running.Values];
        await Task.WhenAll(running.Select(p => p.TerminateAsync(TimeSpan.FromSeconds(10)))).ConfigureAwait(false);
        foreach (var proxy in _proxies.Values) await proxy.DisposeAsync().ConfigureAwait(false);
        _wake.Dispose();
        _stop.Dispose();
        try { Directory.Delete(_options.StateDirectory, recursive: true); } catch (IOException) { /* a log may still be open */ }
    }
}
