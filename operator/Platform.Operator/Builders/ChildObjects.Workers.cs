// The worker StatefulSet: one platform-worker per pod, the model mounted read-only (or, for
// hf://, downloaded by an init container into the pod's hub cache: ChildObjects.Hub.cs), the
// worker's switches written through Core's WorkerArguments, probes that allow a long load.
using k8s.Models;
using Platform.Core.Workers;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1StatefulSet BuildWorkers(LongContextModel model, ImageDefaults images, string configHash)
    {
        var name = model.Metadata.Name;
        var spec = model.Spec;
        var resources = new V1ResourceRequirements { Requests = new Dictionary<string, ResourceQuantity>(), Limits = new Dictionary<string, ResourceQuantity>() };
        if (spec.Worker.Resources.Gpus > 0)
        {
            string gpus = spec.Worker.Resources.Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture);
            resources.Limits[spec.Worker.Resources.GpuResource] = new ResourceQuantity(gpus);
            resources.Requests[spec.Worker.Resources.GpuResource] = new ResourceQuantity(gpus);
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

        string image = string.IsNullOrEmpty(spec.Worker.Image) ? images.WorkerImage : spec.Worker.Image;
        var container = new V1Container
        {
            Name = "worker",
            Image = image,
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
                Template = WithHubDownload(
                    WithGrace(PodTemplate(model, Names.WorkerComponent, configHash, container, spec.Worker.NodeSelector, spec.Worker.Tolerations), Shutdown.WorkerTerminationGraceSeconds),
                    model, image, images.PullPolicy, WorkerDownloadArgs(model)),
            },
        };
    }

    private const string ModelVolume = "model";
    private const string ModelMountPath = "/models";

    /// <summary>
    /// Where the pods find the model: pvc://CLAIM/PATH mounts the claim read-only at /models and reads
    /// /models/PATH; file:///PATH is a path already in the image or node; hf://ORG/NAME[@REV] is passed through
    /// (the binaries resolve it in the hub cache the download init container filled).
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

    /// <summary>The worker image's download step for an hf:// model: fill the hub cache, then exit.</summary>
    public static List<string> WorkerDownloadArgs(LongContextModel model) =>
        new WorkerArguments { Model = model.Spec.Model.Source, DownloadOnly = true, LogFormat = "json" }.ToArgs();

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
            Dtype = NumericFormats.ResolveComputeDtype(spec.Model.Dtype, spec.Worker.Resources.Gpus > 0),
            WeightDtype = spec.Model.WeightDtype,
            Quantization = spec.Model.Quantization == NumericFormats.NoQuantization ? null : spec.Model.Quantization,
            // A pod with GPUs computes on its first visible one (the device plugin exposes only the pod's own).
            Device = spec.Worker.Resources.Gpus > 0 ? ComputeDevice.Cuda().ToString() : null,
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
}
