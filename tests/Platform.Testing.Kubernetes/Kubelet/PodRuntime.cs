// One pod on the test node: prepares what a node supplies (the pod's loopback address, its
// environment with downward-API fields and secret/configmap references, its volumes as local
// directories: emptyDir, configMap, secret, persistentVolumeClaim, the service-account token)
// and runs each container as a ContainerProcess: the init containers first, one at a time in
// order, each to a zero exit (a failure is retried with backoff while the pod stays Pending),
// then the main containers. Reports the pod's status as the kubelet writes it (phase, podIP,
// the Initialized and Ready conditions, init and main container statuses, from which kubectl
// prints Init:0/1, Init:CrashLoopBackOff, PodInitializing, Running).
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes.Kubelet;

internal sealed class PodRuntime : IAsyncDisposable
{
    public const string ServiceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount";
    private readonly List<ContainerProcess> _containers = [];
    private readonly List<ContainerProcess> _initContainers = [];
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _running = Task.CompletedTask;
    private Task? _terminating;

    private PodRuntime(string name, string uid, string ip, string directory)
    {
        Name = name;
        Uid = uid;
        Ip = ip;
        Directory = directory;
    }

    public string Name { get; }

    public string Uid { get; }

    public string Ip { get; }

    public string Directory { get; }

    public string? StartError { get; private set; }

    public IReadOnlyList<ContainerProcess> Containers => _containers;

    public IReadOnlyList<ContainerProcess> InitContainers => _initContainers;

    /// <summary>Every init container has exited 0 (true without init containers).</summary>
    public bool Initialized => _initContainers.All(c => c.Completed);

    public bool Terminating => _terminating is not null;

    public bool Terminated => _terminating is { IsCompleted: true };

    public bool Ready => StartError is null && _containers.Count > 0 && !Terminating && _containers.All(c => c.Running && c.Ready);

    /// <summary>Sets up the pod's volumes and environment and starts its containers.</summary>
    public static PodRuntime Start(JsonObject pod, string ip, FakeApiServer api, ClusterNetwork network, TestKubeletOptions options)
    {
        string name = JsonTools.Str(pod, "metadata.name")!;
        string ns = JsonTools.Str(pod, "metadata.namespace")!;
        string uid = JsonTools.Str(pod, "metadata.uid")!;
        string dir = Path.Combine(options.StateDirectory, "pods", name + "-" + uid[..8]);
        System.IO.Directory.CreateDirectory(dir);
        var runtime = new PodRuntime(name, uid, ip, dir);
        try
        {
            var volumes = PrepareVolumes(pod, ns, dir, api, options);
            // Init containers are prepared like the others (image, env with secret refs, mounts), and a missing
            // secret fails the pod before anything runs, as CreateContainerConfigError does on a node.
            foreach (var container in (pod["spec"]!["initContainers"] as JsonArray ?? []).OfType<JsonObject>())
                runtime._initContainers.Add(Prepare(container, runToCompletion: true));
            foreach (var container in (pod["spec"]!["containers"] as JsonArray ?? []).OfType<JsonObject>())
                runtime._containers.Add(Prepare(container, runToCompletion: false));
            runtime._running = Task.Run(runtime.RunAsync);

            ContainerProcess Prepare(JsonObject container, bool runToCompletion)
            {
                string image = JsonTools.Str(container, "image") ?? "";
                var entrypoint = options.Entrypoint(image) ?? throw new PodStartException("ErrImagePull", $"the test node cannot run image {image}");
                var env = Environment(pod, container, ns, ip, api, options);
                var command = (container["command"] as JsonArray)?.Select(n => Expand(n!.GetValue<string>(), env)).ToArray();
                var args = (container["args"] as JsonArray ?? []).Select(n => Expand(n!.GetValue<string>(), env)).ToArray();
                string[] argv = command is { Length: > 0 } ? [.. command, .. args] : [.. entrypoint, .. args];
                var mounts = new List<BindMount>();
                foreach (var m in (container["volumeMounts"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    string volume = JsonTools.Str(m, "name")!;
                    if (!volumes.TryGetValue(volume, out var source)) throw new PodStartException("CreateContainerConfigError", $"volume {volume} is not defined in the pod");
                    if (JsonTools.Str(m, "subPath") is { Length: > 0 } sub) source = Path.Combine(source, sub);
                    mounts.Add(new BindMount(source, JsonTools.Str(m, "mountPath")!, m["readOnly"]?.GetValue<bool>() == true));
                }
                if (volumes.TryGetValue(ServiceAccountPath, out var token)) mounts.Add(new BindMount(token, ServiceAccountPath, ReadOnly: true));
                var containerDir = Path.Combine(dir, JsonTools.Str(container, "name") ?? "main");
                System.IO.Directory.CreateDirectory(containerDir);
                return new ContainerProcess(container, argv, env, mounts, name, ip, network.HostsFile, containerDir, options, runToCompletion);
            }
        }
        catch (PodStartException e)
        {
            runtime.StartError = e.Reason + ": " + e.Message;
        }
        return runtime;
    }

    /// <summary>Init containers one at a time, each until it exits 0 (retried with backoff meanwhile), then the main containers.</summary>
    private async Task RunAsync()
    {
        foreach (var init in _initContainers)
        {
            lock (_lock)
            {
                if (_terminating is not null) return;
                init.Start();
            }
            await init.Completion.WaitAsync(_stopping.Token).ConfigureAwait(false);
        }
        lock (_lock)
        {
            if (_terminating is not null) return;
            foreach (var c in _containers) c.Start();
        }
    }

    /// <summary>Graceful stop, started once: SIGTERM to every started container (init or main), SIGKILL after the grace.</summary>
    public Task TerminateAsync(TimeSpan grace)
    {
        lock (_lock)
        {
            if (_terminating is null)
            {
                _stopping.Cancel();
                var running = _running.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                _terminating = Task.WhenAll(_initContainers.Concat(_containers).Select(c => c.TerminateAsync(grace)).Append(running));
            }
            return _terminating;
        }
    }

    public JsonObject Status(JsonObject pod)
    {
        string now = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        bool ready = Ready;
        var previous = pod["status"] as JsonObject;
        string Since(string type, bool value)
        {
            var old = (previous?["conditions"] as JsonArray)?.OfType<JsonObject>().FirstOrDefault(c => JsonTools.Str(c, "type") == type);
            return old is not null && JsonTools.Str(old, "status") == (value ? "True" : "False") ? JsonTools.Str(old, "lastTransitionTime") ?? now : now;
        }
        JsonObject Condition(string type, bool value) => new() { ["type"] = type, ["status"] = value ? "True" : "False", ["lastTransitionTime"] = Since(type, value) };
        bool initialized = StartError is null && Initialized;
        var statuses = new JsonArray(_containers.Select(c => (JsonNode)new JsonObject
        {
            ["name"] = c.Name,
            ["ready"] = c.Running && c.Ready,
            ["started"] = c.Running && c.Started,
            ["restartCount"] = c.RestartCount,
            ["state"] = c.Running ? new JsonObject { ["running"] = new JsonObject() }
                : c.LastExitCode is { } code ? new JsonObject { ["terminated"] = new JsonObject { ["exitCode"] = code } }
                : new JsonObject { ["waiting"] = new JsonObject { ["reason"] = initialized ? "ContainerCreating" : "PodInitializing" } },
        }).ToArray());
        var initialisedCondition = Condition("Initialized", initialized);
        if (!initialized && _initContainers.Count > 0)
        {
            initialisedCondition["reason"] = "ContainersNotInitialized";
            initialisedCondition["message"] = $"containers with incomplete status: [{string.Join(' ', _initContainers.Where(c => !c.Completed).Select(c => c.Name))}]";
        }
        var status = new JsonObject
        {
            ["phase"] = StartError is not null || !initialized ? "Pending" : _containers.Any(c => c.Running) || Terminating ? "Running" : "Pending",
            ["hostIP"] = "127.0.0.1",
            ["podIP"] = Ip,
            ["podIPs"] = new JsonArray(new JsonObject { ["ip"] = Ip }),
            ["conditions"] = new JsonArray(Condition("PodScheduled", true), initialisedCondition, Condition("ContainersReady", ready), Condition("Ready", ready)),
            ["containerStatuses"] = statuses,
        };
        if (_initContainers.Count > 0) status["initContainerStatuses"] = new JsonArray(_initContainers.Select(c => (JsonNode)InitStatus(c)).ToArray());
        if (StartError is not null) status["message"] = StartError;
        return status;
    }

    /// <summary>An init container as a node reports it: PodInitializing before its turn, running, Completed
    /// (exit 0, ready), or, after a failure, waiting in CrashLoopBackOff with the failed run as lastState.</summary>
    private static JsonObject InitStatus(ContainerProcess c)
    {
        JsonObject Terminated(int code) => new() { ["terminated"] = new JsonObject { ["exitCode"] = code, ["reason"] = code == 0 ? "Completed" : "Error" } };
        var status = new JsonObject
        {
            ["name"] = c.Name,
            ["ready"] = c.Completed,
            ["started"] = c.Running,
            ["restartCount"] = c.RestartCount,
            ["state"] = c.Completed ? Terminated(0)
                : c.Running ? new JsonObject { ["running"] = new JsonObject() }
                : c.BackingOff ? new JsonObject { ["waiting"] = new JsonObject { ["reason"] = "CrashLoopBackOff", ["message"] = $"back-off restarting failed container {c.Name}" } }
                : c.LastExitCode is { } code ? Terminated(code)
                : new JsonObject { ["waiting"] = new JsonObject { ["reason"] = "PodInitializing" } },
        };
        if (c.LastExitCode is { } last && last != 0 && !c.Completed) status["lastState"] = Terminated(last);
        return status;
    }

    private static Dictionary<string, string> PrepareVolumes(JsonObject pod, string ns, string dir, FakeApiServer api, TestKubeletOptions options)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var v in (pod["spec"]!["volumes"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string name = JsonTools.Str(v, "name")!;
            string path = Path.Combine(dir, "volumes", name);
            if (v["emptyDir"] is not null)
            {
                System.IO.Directory.CreateDirectory(path);
            }
            else if (v["persistentVolumeClaim"] is JsonObject pvc)
            {
                string claim = JsonTools.Str(pvc, "claimName")!;
                path = options.Claims.TryGetValue(claim, out var local) ? local
                    : throw new PodStartException("FailedMount", $"persistentvolumeclaim \"{claim}\" is not bound on this node");
            }
            else if (v["configMap"] is JsonObject cm)
            {
                var obj = api.Get("", "configmaps", ns, JsonTools.Str(cm, "name")!)
                    ?? throw new PodStartException("FailedMount", $"configmap \"{JsonTools.Str(cm, "name")}\" not found");
                WriteItems(path, obj["data"] as JsonObject, cm["items"] as JsonArray, base64: false);
            }
            else if (v["secret"] is JsonObject secret)
            {
                var obj = api.Get("", "secrets", ns, JsonTools.Str(secret, "secretName")!)
                    ?? throw new PodStartException("FailedMount", $"secret \"{JsonTools.Str(secret, "secretName")}\" not found");
                WriteItems(path, obj["data"] as JsonObject, secret["items"] as JsonArray, base64: true);
            }
            else
            {
                throw new PodStartException("FailedMount", $"volume {name}: only emptyDir, persistentVolumeClaim, configMap and secret volumes are supported by the test kubelet");
            }
            result[name] = path;
        }
        // The service-account token, unless the pod opts out (automountServiceAccountToken: false).
        if (pod["spec"]!["automountServiceAccountToken"]?.GetValue<bool>() != false)
        {
            string sa = Path.Combine(dir, "serviceaccount");
            System.IO.Directory.CreateDirectory(sa);
            File.WriteAllText(Path.Combine(sa, "token"), "test-kubelet-token-" + (JsonTools.Str(pod, "spec.serviceAccountName") ?? "default"));
            File.WriteAllText(Path.Combine(sa, "namespace"), ns);
            if (api.CaPem is { } ca) File.WriteAllText(Path.Combine(sa, "ca.crt"), ca);
            result[ServiceAccountPath] = sa;
        }
        return result;
    }

    private static void WriteItems(string path, JsonObject? data, JsonArray? items, bool base64)
    {
        System.IO.Directory.CreateDirectory(path);
        string Value(string key) => data?[key]?.GetValue<string>() is { } s
            ? base64 ? Encoding.UTF8.GetString(Convert.FromBase64String(s)) : s
            : throw new PodStartException("FailedMount", $"key {key} not found");
        if (items is { Count: > 0 })
        {
            foreach (var item in items.OfType<JsonObject>())
            {
                var file = Path.Combine(path, JsonTools.Str(item, "path")!);
                System.IO.Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                File.WriteAllText(file, Value(JsonTools.Str(item, "key")!));
            }
            return;
        }
        foreach (var (key, _) in data ?? []) File.WriteAllText(Path.Combine(path, key), Value(key));
    }

    /// <summary>The container's environment: node env, Kubernetes service env, then env and envFrom of the spec.</summary>
    private static Dictionary<string, string> Environment(JsonObject pod, JsonObject container, string ns, string ip, FakeApiServer api, TestKubeletOptions options)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["PATH"] = System.Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ["HOME"] = System.Environment.GetEnvironmentVariable("HOME") ?? "/root",
            ["HOSTNAME"] = JsonTools.Str(pod, "metadata.name")!,
            ["KUBERNETES_SERVICE_HOST"] = "127.0.0.1",
            ["KUBERNETES_SERVICE_PORT"] = api.Port.ToString(CultureInfo.InvariantCulture),
            ["KUBERNETES_SERVICE_PORT_HTTPS"] = api.Port.ToString(CultureInfo.InvariantCulture),
        };
        foreach (var (k, v) in options.NodeEnvironment) env[k] = v;
        foreach (var from in (container["envFrom"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string prefix = JsonTools.Str(from, "prefix") ?? "";
            bool secret = from["secretRef"] is not null;
            string refName = JsonTools.Str(from, secret ? "secretRef.name" : "configMapRef.name")!;
            var obj = api.Get("", secret ? "secrets" : "configmaps", ns, refName)
                ?? throw new PodStartException("CreateContainerConfigError", $"{(secret ? "secret" : "configmap")} \"{refName}\" not found");
            foreach (var (k, v) in obj["data"] as JsonObject ?? [])
                env[prefix + k] = secret ? Encoding.UTF8.GetString(Convert.FromBase64String(v!.GetValue<string>())) : v!.GetValue<string>();
        }
        foreach (var e in (container["env"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string name = JsonTools.Str(e, "name")!;
            if (e["value"] is { } value)
            {
                env[name] = Expand(value.GetValue<string>(), env);
                continue;
            }
            if (e["valueFrom"] is not JsonObject from) continue;
            if (JsonTools.Str(from, "fieldRef.fieldPath") is { } field)
            {
                env[name] = field switch
                {
                    "metadata.name" => JsonTools.Str(pod, "metadata.name")!,
                    "metadata.namespace" => ns,
                    "metadata.uid" => JsonTools.Str(pod, "metadata.uid")!,
                    "status.podIP" => ip,
                    "status.hostIP" => "127.0.0.1",
                    "spec.nodeName" => "test-node",
                    "spec.serviceAccountName" => JsonTools.Str(pod, "spec.serviceAccountName") ?? "default",
                    _ when field.StartsWith("metadata.labels['", StringComparison.Ordinal) => JsonTools.Labels(pod).GetValueOrDefault(field[17..^2]) ?? "",
                    _ => throw new PodStartException("CreateContainerConfigError", $"env {name}: fieldRef {field} is not supported by the test kubelet"),
                };
            }
            else if ((from["secretKeyRef"] ?? from["configMapKeyRef"]) is JsonObject keyRef)
            {
                // A key of a Secret (base64 in data) or of a ConfigMap; optional refs may be missing.
                bool secret = from["secretKeyRef"] is not null;
                var source = api.Get("", secret ? "secrets" : "configmaps", ns, JsonTools.Str(keyRef, "name")!);
                var raw = source?["data"]?[JsonTools.Str(keyRef, "key")!]?.GetValue<string>();
                if (raw is null)
                {
                    if (keyRef["optional"]?.GetValue<bool>() == true) continue;
                    throw new PodStartException("CreateContainerConfigError", $"env {name}: {(secret ? "secret" : "configmap")} \"{JsonTools.Str(keyRef, "name")}\" key {JsonTools.Str(keyRef, "key")} not found");
                }
                env[name] = secret ? Encoding.UTF8.GetString(Convert.FromBase64String(raw)) : raw;
            }
            else
            {
                throw new PodStartException("CreateContainerConfigError", $"env {name}: this valueFrom is not supported by the test kubelet");
            }
        }
        return env;
    }

    /// <summary>The kubelet's $(VAR) expansion: a defined variable is replaced, $$ escapes, anything else stays.</summary>
    public static string Expand(string text, IReadOnlyDictionary<string, string> env)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] == '$' && i + 1 < text.Length && text[i + 1] == '$')
            {
                sb.Append('$');
                i++;
            }
            else if (text[i] == '$' && i + 1 < text.Length && text[i + 1] == '(' && text.IndexOf(')', i + 2) is var end and > 0
                && env.TryGetValue(text[(i + 2)..end], out var value))
            {
                sb.Append(value);
                i = end;
            }
            else
            {
                sb.Append(text[i]);
            }
        }
        return sb.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        await TerminateAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        _stopping.Dispose();
    }
}

internal sealed class PodStartException(string reason, string message) : Exception(message)
{
    public string Reason { get; } = reason;
}
