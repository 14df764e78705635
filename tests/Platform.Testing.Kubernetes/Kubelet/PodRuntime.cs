// One pod on the test node: prepares what a node supplies (the pod's loopback address, its
// environment with downward-API fields and secret/configmap references, its volumes as local
// directories: emptyDir, configMap, secret, persistentVolumeClaim, the service-account token)
// and runs each container as a ContainerProcess. Reports the pod's status as the kubelet
// writes it (phase, podIP, Ready condition, container statuses).
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes.Kubelet;

internal sealed class PodRuntime : IAsyncDisposable
{
    public const string ServiceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount";
    private readonly List<ContainerProcess> _containers = [];
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
            foreach (var container in (pod["spec"]!["containers"] as JsonArray ?? []).OfType<JsonObject>())
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
                runtime._containers.Add(new ContainerProcess(container, argv, env, mounts, name, ip, network.HostsFile, containerDir, options));
            }
            foreach (var c in runtime._containers) c.Start();
        }
        catch (PodStartException e)
        {
            runtime.StartError = e.Reason + ": " + e.Message;
        }
        return runtime;
    }

    /// <summary>Graceful stop, started once: SIGTERM to every container, SIGKILL after the grace.</summary>
    public Task TerminateAsync(TimeSpan grace) => _terminating ??= Task.WhenAll(_containers.Select(c => c.TerminateAsync(grace)));

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
        var statuses = new JsonArray(_containers.Select(c => (JsonNode)new JsonObject
        {
            ["name"] = c.Name,
            ["ready"] = c.Running && c.Ready,
            ["started"] = c.Running && c.Started,
            ["restartCount"] = c.RestartCount,
            ["state"] = c.Running ? new JsonObject { ["running"] = new JsonObject() }
                : c.LastExitCode is { } code ? new JsonObject { ["terminated"] = new JsonObject { ["exitCode"] = code } }
                : new JsonObject { ["waiting"] = new JsonObject { ["reason"] = "ContainerCreating" } },
        }).ToArray());
        var status = new JsonObject
        {
            ["phase"] = StartError is not null ? "Pending" : _containers.Any(c => c.Running) || Terminating ? "Running" : "Pending",
            ["hostIP"] = "127.0.0.1",
            ["podIP"] = Ip,
            ["podIPs"] = new JsonArray(new JsonObject { ["ip"] = Ip }),
            ["conditions"] = new JsonArray(Condition("PodScheduled", true), Condition("Initialized", true), Condition("ContainersReady", ready), Condition("Ready", ready)),
            ["containerStatuses"] = statuses,
        };
        if (StartError is not null) status["message"] = StartError;
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
    }
}

internal sealed class PodStartException(string reason, string message) : Exception(message)
{
    public string Reason { get; } = reason;
}
