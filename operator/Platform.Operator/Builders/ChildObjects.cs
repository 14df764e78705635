// Pure builders of every object the operator owns for a LongContextModel: worker StatefulSet
// with its headless Service, router Deployment and Service, the router's ServiceAccount with a
// Role allowing only list/watch of EndpointSlices (its worker discovery), ConfigMap,
// PodDisruptionBudget and NetworkPolicy (optionally admitting a monitoring namespace to the
// metrics port). No I/O: same spec in, same objects out, so they are unit-tested alone and the
// reconciler only compares hashes. Every pod meets the "restricted" Pod Security profile.
// This file holds the entry point (Build), the hashes and the helpers every kind shares; each
// kind's builder is in its own ChildObjects.<Kind>.cs.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;
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

public static partial class ChildObjects
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
