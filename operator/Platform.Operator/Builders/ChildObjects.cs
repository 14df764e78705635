// Pure builders of every object the operator owns for a LongContextModel: worker StatefulSet
// with its headless Service, router Deployment and Service, the router's ServiceAccount with a
// Role allowing only list/watch of EndpointSlices (its worker discovery), ConfigMap,
// PodDisruptionBudget and NetworkPolicy (optionally admitting a monitoring namespace to the
// metrics port). No I/O: same spec in, same objects out, so they are unit-tested alone and the
// reconciler only compares hashes. Every pod meets the "restricted" Pod Security profile.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;
using Platform.Core.Workers;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

/// <summary>Images used when the spec does not name one (set from the chart's values).</summary>
public sealed record ImageDefaults(string WorkerImage, string RouterImage, string PullPolicy = "IfNotPresent");

/// <summary>A namespace (e.g. Prometheus's) whose pods may scrape the workers' metrics port (Operator:MonitoringNamespace).</summary>
public sealed record MonitoringAccess(string Namespace);

/// <summary>Everything the operator wants to exist for one model.</summary>
public sealed record DesiredChildren(
    V1ConfigMap ConfigMap,
    V1Service WorkerService,
    V1StatefulSet Workers,
    V1Deployment Router,
    V1Service RouterService,
    V1ServiceAccount RouterAccount,
    V1Role RouterRole,
    V1RoleBinding RouterRoleBinding,
    V1PodDisruptionBudget DisruptionBudget,
    V1NetworkPolicy NetworkPolicy)
{
    public IEnumerable<IKubernetesObject<V1ObjectMeta>> All() =>
        [ConfigMap, WorkerService, Workers, RouterAccount, RouterRole, RouterRoleBinding, Router, RouterService, DisruptionBudget, NetworkPolicy];
}

public static class ChildObjects
{
    private const int NonRootUid = 65532;
    private const string ConfigVolume = "config";
    private const string ConfigMountPath = "/etc/platform";
    private static readonly JsonSerializerOptions ConfigJson = new() { WriteIndented = true };

    public static DesiredChildren Build(LongContextModel model, ImageDefaults images, MonitoringAccess? monitoring = null)
    {
        var configMap = BuildConfigMap(model);
        var configHash = ConfigHash(configMap.Data);
        var children = new DesiredChildren(
            configMap,
            BuildWorkerService(model),
            BuildWorkers(model, images, configHash),
            BuildRouter(model, images, configHash),
            BuildRouterService(model),
            BuildRouterAccount(model),
            BuildRouterRole(model),
            BuildRouterRoleBinding(model),
            BuildDisruptionBudget(model),
            BuildNetworkPolicy(model, monitoring));
        foreach (var child in children.All())
        {
            child.Metadata.Annotations ??= new Dictionary<string, string>();
            child.Metadata.Annotations[Names.SpecHashAnnotation] = SpecHash(child);
        }

        return children;
    }

    public static V1ConfigMap BuildConfigMap(LongContextModel model)
    {
        var name = model.Metadata.Name;
        var ns = model.Metadata.NamespaceProperty;
        var spec = model.Spec;
        var engine = new
        {
            model = new { source = spec.Model.Source, servedName = spec.Model.ServedName, dtype = spec.Model.Dtype, maxContextTokens = spec.Model.MaxContextTokens },
            engine = new { blockSize = spec.Worker.Engine.BlockSize, maxBatchTokens = spec.Worker.Engine.MaxBatchTokens, kvMemoryFraction = spec.Worker.Engine.KvMemoryFraction },
            kvCache = new
            {
                hostMemory = spec.KvCache.HostMemory,
                remote = spec.KvCache.Remote is { } r ? new { address = r.Redis.Address, ttlSeconds = r.TtlSeconds, keyPrefix = Names.KvKeyPrefix(ns, name), passwordEnv = r.Redis.SecretRef is null ? null : "REDIS_PASSWORD" } : null,
                distAttention = new { enabled = spec.KvCache.DistAttention.Enabled, maxPeers = spec.KvCache.DistAttention.MaxPeers },
            },
            ports = new { grpc = Names.WorkerGrpcPort, http = Names.HttpPort },
            peers = new { service = $"{Names.WorkerHeadlessService(name)}.{ns}.svc", statefulSet = Names.WorkerStatefulSet(name) },
        };
        return new V1ConfigMap
        {
            ApiVersion = "v1",
            Kind = "ConfigMap",
            Metadata = Meta(model, Names.ConfigMap(name), Names.WorkerComponent),
            Data = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["engine.json"] = JsonSerializer.Serialize(engine, ConfigJson),
            },
        };
    }

    public static V1Service BuildWorkerService(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = Meta(model, Names.WorkerHeadlessService(name), Names.WorkerComponent),
            Spec = new V1ServiceSpec
            {
                ClusterIP = "None",
                // Peers must resolve each other while still loading the model.
                PublishNotReadyAddresses = true,
                Selector = Names.SelectorLabels(name, Names.WorkerComponent),
                Ports =
                [
                    new V1ServicePort { Name = Names.WorkerGrpcPortName, Port = Names.WorkerGrpcPort, TargetPort = Names.WorkerGrpcPort, Protocol = "TCP" },
                    new V1ServicePort { Name = "http", Port = Names.HttpPort, TargetPort = Names.HttpPort, Protocol = "TCP" },
                ],
            },
        };
    }

    public static V1StatefulSet BuildWorkers(LongContextModel model, ImageDefaults images, string configHash)
    {
        var name = model.Metadata.Name;
        var spec = model.Spec;
        var resources = new V1ResourceRequirements { Requests = new Dictionary<string, ResourceQuantity>(), Limits = new Dictionary<string, ResourceQuantity>() };
        if (spec.Worker.Resources.Gpus > 0)
        {
            resources.Limits["nvidia.com/gpu"] = new ResourceQuantity(spec.Worker.Resources.Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture));
            resources.Requests["nvidia.com/gpu"] = new ResourceQuantity(spec.Worker.Resources.Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (spec.Worker.Resources.Memory is { Length: > 0 } memory)
        {
            resources.Requests["memory"] = new ResourceQuantity(memory);
            resources.Limits["memory"] = new ResourceQuantity(memory);
        }

        if (spec.Worker.Resources.Cpu is { Length: > 0 } cpu)
        {
            resources.Requests["cpu"] = new ResourceQuantity(cpu);
        }

        var env = new List<V1EnvVar>
        {
            new() { Name = "POD_NAME", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.name" } } },
            new() { Name = "POD_NAMESPACE", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.namespace" } } },
            PodIpEnv(),
        };
        if (spec.KvCache.Remote?.Redis.SecretRef is { } redisSecret)
        {
            env.Add(SecretEnv("REDIS_PASSWORD", redisSecret));
        }

        var container = new V1Container
        {
            Name = "worker",
            Image = string.IsNullOrEmpty(spec.Worker.Image) ? images.WorkerImage : spec.Worker.Image,
            ImagePullPolicy = images.PullPolicy,
            Args = WorkerArgs(model),
            Env = env,
            Ports =
            [
                new V1ContainerPort { Name = "grpc", ContainerPort = Names.WorkerGrpcPort, Protocol = "TCP" },
                new V1ContainerPort { Name = "http", ContainerPort = Names.HttpPort, Protocol = "TCP" },
            ],
            Resources = resources,
            // Loading a long-context model can take many minutes: the startup probe allows an hour
            // before liveness applies, so a slow load is not a crash loop.
            StartupProbe = Probe("/healthz", periodSeconds: 10, failureThreshold: 360),
            LivenessProbe = Probe("/healthz", periodSeconds: 10, failureThreshold: 3),
            ReadinessProbe = Probe("/readyz", periodSeconds: 5, failureThreshold: 2),
            VolumeMounts = [new V1VolumeMount { Name = ConfigVolume, MountPath = ConfigMountPath, ReadOnlyProperty = true }, new V1VolumeMount { Name = "tmp", MountPath = "/tmp" }, .. ModelMounts(model)],
            SecurityContext = ContainerSecurity(),
        };
        return new V1StatefulSet
        {
            ApiVersion = "apps/v1",
            Kind = "StatefulSet",
            Metadata = Meta(model, Names.WorkerStatefulSet(name), Names.WorkerComponent),
            Spec = new V1StatefulSetSpec
            {
                Replicas = spec.Replicas,
                ServiceName = Names.WorkerHeadlessService(name),
                // Workers are independent until DistAttention pairs them: start them all at once.
                PodManagementPolicy = "Parallel",
                Selector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) },
                Template = WithGrace(PodTemplate(model, Names.WorkerComponent, configHash, container, spec.Worker.NodeSelector, spec.Worker.Tolerations), Shutdown.WorkerTerminationGraceSeconds),
            },
        };
    }

    public static V1Deployment BuildRouter(LongContextModel model, ImageDefaults images, string configHash)
    {
        var name = model.Metadata.Name;
        var spec = model.Spec;
        var env = new List<V1EnvVar>
        {
            new() { Name = "POD_NAMESPACE", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.namespace" } } },
            PodIpEnv(),
            // The router's drain: in-flight requests may finish for this long after SIGTERM (the pod's grace is longer).
            new() { Name = Shutdown.HostShutdownTimeoutVariable, Value = Shutdown.RouterShutdownSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        };
        if (spec.Router.ApiKeySecretRef is { } apiKey)
        {
            // The router reads Router:ApiKeys; the environment form of that key.
            env.Add(SecretEnv("Router__ApiKeys", apiKey));
        }

        var container = new V1Container
        {
            Name = "router",
            Image = string.IsNullOrEmpty(spec.Router.Image) ? images.RouterImage : spec.Router.Image,
            ImagePullPolicy = images.PullPolicy,
            Args = RouterArgs(model),
            Env = env,
            Ports = [new V1ContainerPort { Name = "http", ContainerPort = Names.HttpPort, Protocol = "TCP" }],
            LivenessProbe = Probe("/healthz", periodSeconds: 10, failureThreshold: 3),
            ReadinessProbe = Probe("/readyz", periodSeconds: 5, failureThreshold: 2),
            // The router tokenizes with the model's own tokenizer and chat template: it mounts the model too.
            VolumeMounts = [new V1VolumeMount { Name = "tmp", MountPath = "/tmp" }, .. ModelMounts(model)],
            SecurityContext = ContainerSecurity(),
        };
        var template = WithGrace(PodTemplate(model, Names.RouterComponent, configHash, container, nodeSelector: null, tolerations: null), Shutdown.RouterTerminationGraceSeconds);
        // The router watches the workers' EndpointSlices: its own account, the token mounted.
        template.Spec.ServiceAccountName = Names.RouterAccount(name);
        template.Spec.AutomountServiceAccountToken = true;
        return new V1Deployment
        {
            ApiVersion = "apps/v1",
            Kind = "Deployment",
            Metadata = Meta(model, Names.RouterDeployment(name), Names.RouterComponent),
            Spec = new V1DeploymentSpec
            {
                Replicas = spec.Router.Replicas,
                Selector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.RouterComponent) },
                Template = template,
            },
        };
    }

    private const string ModelVolume = "model";
    private const string ModelMountPath = "/models";

    /// <summary>
    /// Where the pods find the model: pvc://CLAIM/PATH mounts the claim read-only at /models and reads
    /// /models/PATH; file:///PATH is a path already in the image or node. hf:// never gets here (the CRD and
    /// SpecValidator refuse it); were it to, it is passed through and the worker refuses it with the fix.
    /// </summary>
    public static (V1Volume? Volume, string Path) ModelLocation(ModelSpec spec)
    {
        const string pvc = "pvc://", file = "file://";
        if (spec.Source.StartsWith(pvc, StringComparison.Ordinal))
        {
            var rest = spec.Source[pvc.Length..];
            int slash = rest.IndexOf('/', StringComparison.Ordinal);
            string claim = slash < 0 ? rest : rest[..slash];
            string sub = slash < 0 ? "" : rest[(slash + 1)..].Trim('/');
            var volume = new V1Volume { Name = ModelVolume, PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = claim, ReadOnlyProperty = true } };
            return (volume, sub.Length == 0 ? ModelMountPath : $"{ModelMountPath}/{sub}");
        }
        if (spec.Source.StartsWith(file, StringComparison.Ordinal)) return (null, spec.Source[file.Length..]);
        return (null, spec.Source);
    }

    private static V1VolumeMount[] ModelMounts(LongContextModel model) =>
        ModelLocation(model.Spec.Model).Volume is null ? [] : [new V1VolumeMount { Name = ModelVolume, MountPath = ModelMountPath, ReadOnlyProperty = true }];

    /// <summary>The platform-worker switches (docs/worker.md) for this model's pods.</summary>
    public static List<string> WorkerArgs(LongContextModel model)
    {
        var name = model.Metadata.Name;
        var spec = model.Spec;
        var kv = spec.KvCache;
        var remote = kv.Remote;
        // DistAttention peers by their StatefulSet identities, up to the most replicas there can be, so scaling
        // does not change the pods' spec (a missing peer is just unreachable); each worker leaves itself out.
        int most = spec.Autoscaling.Enabled ? Math.Max(spec.Autoscaling.MaxReplicas, spec.Replicas) : spec.Replicas;
        string service = Names.WorkerHeadlessService(name);
        return new WorkerArguments
        {
            Model = ModelLocation(spec.Model).Path,
            ServedModelName = spec.Model.ServedName,
            Host = $"$({PodIpVariable})",
            Port = Names.WorkerGrpcPort,
            HttpPort = Names.HttpPort,
            Dtype = spec.Model.Dtype,
            MaxContext = spec.Model.MaxContextTokens,
            BlockSize = spec.Worker.Engine.BlockSize,
            MaxBatchTokens = spec.Worker.Engine.MaxBatchTokens,
            KvMemoryFraction = spec.Worker.Engine.KvMemoryFraction,
            LogFormat = "json",
            DrainGraceSeconds = Shutdown.WorkerDrainSeconds,
            DistAttention = kv.DistAttention.Enabled,
            KvTokens = spec.Worker.Engine.KvCacheTokens,
            // KV tier (docs/kvcache.md): the shared store under this model's key prefix (the finalizer purges exactly
            // that prefix); its password comes from $REDIS_PASSWORD, mounted from the secret.
            KvTier = remote is not null ? "remote" : kv.HostMemory is { Length: > 0 } ? "host" : null,
            Redis = remote?.Redis.Address,
            KvKeyPrefix = remote is null ? null : Names.KvKeyPrefix(model.Metadata.NamespaceProperty, name),
            KvTtlSeconds = remote?.TtlSeconds,
            KvHostMemory = kv.HostMemory is { Length: > 0 } host ? host : null,
            DistMaxPeers = kv.DistAttention.Enabled ? kv.DistAttention.MaxPeers : null,
            Peers = kv.DistAttention.Enabled
                ? [.. Enumerable.Range(0, most).Select(i => $"http://{Names.WorkerStatefulSet(name)}-{i}.{service}:{Names.WorkerGrpcPort}")]
                : null,
        }.ToArgs();
    }

    /// <summary>The platform-router switches (docs/router.md): Kubernetes discovery of this model's workers.</summary>
    public static List<string> RouterArgs(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return
        [
            "--model", ModelLocation(model.Spec.Model).Path,
            "--discovery", "kubernetes",
            "--worker-service", Names.WorkerHeadlessService(name),
            // Expanded by the kubelet from the env var (the pod's own namespace).
            "--namespace", "$(POD_NAMESPACE)",
            "--worker-port-name", Names.WorkerGrpcPortName,
            "--host", $"$({PodIpVariable})",
            "--port", Names.HttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--policy", RouterPolicy(model.Spec.Router.Policy),
            "--served-model-name", model.Spec.Model.ServedName,
        ];
    }

    /// <summary>The CRD's policy enum in the router's spelling.</summary>
    public static string RouterPolicy(string policy) => policy switch
    {
        "LeastLoaded" => "least-loaded",
        "RoundRobin" => "round-robin",
        _ => "kv-aware",
    };

    public static V1ServiceAccount BuildRouterAccount(LongContextModel model) => new()
    {
        ApiVersion = "v1",
        Kind = "ServiceAccount",
        Metadata = Meta(model, Names.RouterAccount(model.Metadata.Name), Names.RouterComponent),
    };

    /// <summary>Least privilege for discovery: list and watch EndpointSlices in the model's namespace, nothing else.</summary>
    public static V1Role BuildRouterRole(LongContextModel model) => new()
    {
        ApiVersion = "rbac.authorization.k8s.io/v1",
        Kind = "Role",
        Metadata = Meta(model, Names.RouterAccount(model.Metadata.Name), Names.RouterComponent),
        Rules = [new V1PolicyRule { ApiGroups = ["discovery.k8s.io"], Resources = ["endpointslices"], Verbs = ["list", "watch"] }],
    };

    public static V1RoleBinding BuildRouterRoleBinding(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1RoleBinding
        {
            ApiVersion = "rbac.authorization.k8s.io/v1",
            Kind = "RoleBinding",
            Metadata = Meta(model, Names.RouterAccount(name), Names.RouterComponent),
            RoleRef = new V1RoleRef { ApiGroup = "rbac.authorization.k8s.io", Kind = "Role", Name = Names.RouterAccount(name) },
            Subjects = [new Rbacv1Subject { Kind = "ServiceAccount", Name = Names.RouterAccount(name), NamespaceProperty = model.Metadata.NamespaceProperty }],
        };
    }

    public static V1Service BuildRouterService(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = Meta(model, Names.RouterService(name), Names.RouterComponent),
            Spec = new V1ServiceSpec
            {
                Type = "ClusterIP",
                Selector = Names.SelectorLabels(name, Names.RouterComponent),
                Ports = [new V1ServicePort { Name = "http", Port = Names.RouterServicePort, TargetPort = Names.HttpPort, Protocol = "TCP" }],
            },
        };
    }

    public static V1PodDisruptionBudget BuildDisruptionBudget(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1PodDisruptionBudget
        {
            ApiVersion = "policy/v1",
            Kind = "PodDisruptionBudget",
            Metadata = Meta(model, Names.WorkerDisruptionBudget(name), Names.WorkerComponent),
            Spec = new V1PodDisruptionBudgetSpec
            {
                // One worker at a time: each holds KV (and DistAttention loans) that is costly to rebuild.
                MaxUnavailable = 1,
                Selector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) },
            },
        };
    }

    /// <summary>
    /// Ingress to the workers: this model's router and peer workers on both ports; with <paramref name="monitoring"/>,
    /// also any pod of that namespace on the HTTP port only (/metrics; the same port serves the probes), so
    /// Prometheus can scrape without reaching the gRPC API.
    /// </summary>
    public static V1NetworkPolicy BuildNetworkPolicy(LongContextModel model, MonitoringAccess? monitoring = null)
    {
        var name = model.Metadata.Name;
        var ingress = new List<V1NetworkPolicyIngressRule>
        {
            new()
            {
                // Only this model's router and its peer workers reach the worker ports.
                FromProperty =
                [
                    new V1NetworkPolicyPeer { PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.RouterComponent) } },
                    new V1NetworkPolicyPeer { PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) } },
                ],
                Ports =
                [
                    new V1NetworkPolicyPort { Port = Names.WorkerGrpcPort, Protocol = "TCP" },
                    new V1NetworkPolicyPort { Port = Names.HttpPort, Protocol = "TCP" },
                ],
            },
        };
        if (monitoring is not null)
        {
            ingress.Add(new V1NetworkPolicyIngressRule
            {
                // Kubernetes labels every namespace with its own name (kubernetes.io/metadata.name, since 1.21).
                FromProperty =
                [
                    new V1NetworkPolicyPeer { NamespaceSelector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { [Names.NamespaceNameLabel] = monitoring.Namespace } } },
                ],
                Ports = [new V1NetworkPolicyPort { Port = Names.HttpPort, Protocol = "TCP" }],
            });
        }

        return new V1NetworkPolicy
        {
            ApiVersion = "networking.k8s.io/v1",
            Kind = "NetworkPolicy",
            Metadata = Meta(model, Names.WorkerNetworkPolicy(name), Names.WorkerComponent),
            Spec = new V1NetworkPolicySpec
            {
                PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) },
                PolicyTypes = ["Ingress"],
                Ingress = ingress,
            },
        };
    }

    /// <summary>Stable hash of ConfigMap data (keys sorted), short enough for an annotation.</summary>
    public static string ConfigHash(IDictionary<string, string> data)
    {
        var text = new StringBuilder();
        foreach (var (key, value) in data.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            text.Append(key).Append('\0').Append(value).Append('\0');
        }

        return Hash(text.ToString());
    }

    /// <summary>Hash of a desired object as serialized, excluding the spec-hash annotation itself.</summary>
    public static string SpecHash(IKubernetesObject<V1ObjectMeta> child)
    {
        var annotations = child.Metadata.Annotations;
        string? previous = null;
        if (annotations is not null && annotations.TryGetValue(Names.SpecHashAnnotation, out previous))
        {
            annotations.Remove(Names.SpecHashAnnotation);
        }

        var hash = Hash(KubernetesJson.Serialize(child));
        if (previous is not null)
        {
            annotations![Names.SpecHashAnnotation] = previous;
        }

        return hash;
    }

    public static V1OwnerReference OwnerReference(LongContextModel model) => new()
    {
        ApiVersion = LongContextModel.ApiGroupVersion,
        Kind = LongContextModel.KindName,
        Name = model.Metadata.Name,
        Uid = model.Metadata.Uid,
        Controller = true,
        BlockOwnerDeletion = true,
    };

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];

    private static V1ObjectMeta Meta(LongContextModel model, string name, string component) => new()
    {
        Name = name,
        NamespaceProperty = model.Metadata.NamespaceProperty,
        Labels = Names.Labels(model.Metadata.Name, component),
        OwnerReferences = [OwnerReference(model)],
    };

    private static V1PodTemplateSpec PodTemplate(LongContextModel model, string component, string configHash, V1Container container, IDictionary<string, string>? nodeSelector, IList<V1Toleration>? tolerations) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Labels = Names.Labels(model.Metadata.Name, component),
            Annotations = new Dictionary<string, string> { [Names.ConfigHashAnnotation] = configHash },
        },
        Spec = new V1PodSpec
        {
            // Workers never call the Kubernetes API; the router turns this on for its discovery.
            AutomountServiceAccountToken = false,
            SecurityContext = new V1PodSecurityContext
            {
                RunAsNonRoot = true,
                RunAsUser = NonRootUid,
                RunAsGroup = NonRootUid,
                FsGroup = NonRootUid,
                SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" },
            },
            Containers = [container],
            NodeSelector = nodeSelector is { Count: > 0 } ? new Dictionary<string, string>(nodeSelector) : null,
            Tolerations = tolerations is { Count: > 0 } ? [.. tolerations] : null,
            Volumes =
            [
                new V1Volume { Name = ConfigVolume, ConfigMap = new V1ConfigMapVolumeSource { Name = Names.ConfigMap(model.Metadata.Name) } },
                new V1Volume { Name = "tmp", EmptyDir = new V1EmptyDirVolumeSource() },
                .. ModelLocation(model.Spec.Model).Volume is { } modelVolume ? [modelVolume] : Array.Empty<V1Volume>(),
            ],
        },
    };

    private static V1PodTemplateSpec WithGrace(V1PodTemplateSpec template, long terminationGraceSeconds)
    {
        template.Spec.TerminationGracePeriodSeconds = terminationGraceSeconds;
        return template;
    }

    private static V1SecurityContext ContainerSecurity() => new()
    {
        RunAsNonRoot = true,
        AllowPrivilegeEscalation = false,
        ReadOnlyRootFilesystem = true,
        Privileged = false,
        Capabilities = new V1Capabilities { Drop = ["ALL"] },
        SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" },
    };

    private static V1Probe Probe(string path, int periodSeconds, int failureThreshold) => new()
    {
        HttpGet = new V1HTTPGetAction { Path = path, Port = Names.HttpPort },
        PeriodSeconds = periodSeconds,
        FailureThreshold = failureThreshold,
        TimeoutSeconds = 2,
    };

    /// <summary>
    /// The pod's own IP ($POD_IP), which workers and routers listen on (<c>--host $(POD_IP)</c>): every
    /// client reaches them by pod IP (router → worker, peer → peer, probes, the Services), and a node
    /// that gives each pod its own address, like the test kubelet on 127.0.0.x, can then run two pods
    /// with the same container ports side by side.
    /// </summary>
    private static V1EnvVar PodIpEnv() => new() { Name = PodIpVariable, ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } } };

    public const string PodIpVariable = "POD_IP";

    private static V1EnvVar SecretEnv(string name, SecretKeyRef secret) => new()
    {
        Name = name,
        ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = secret.Name, Key = secret.Key } },
    };
}
