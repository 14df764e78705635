// hf://ORG/NAME[@REV] models in the worker and router pods. Each pod gets a hub
// cache volume (hf-cache: spec.model.cacheClaim, or an emptyDir) at /hf and an
// init container "download" that runs the pod's own image with
// `--model hf://… --download-only true`: it fills the cache (HF_HOME=/hf) with
// HF_ENDPOINT from hubEndpoint and HF_TOKEN from the hubTokenSecret's key
// HF_TOKEN. Kubernetes starts the main container only after it exits 0; that
// container then loads the same source with HF_HUB_OFFLINE=1, so it never
// touches the network, and it never sees the token.
using k8s.Models;
using Platform.Core.Models.Hub;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public const string HubCacheVolume = "hf-cache";
    public const string HubCacheMountPath = "/hf";
    public const string HubDownloadContainer = "download";
    /// <summary>The key of spec.model.hubTokenSecret that holds the token.</summary>
    public const string HubTokenKey = "HF_TOKEN";

    public static bool IsHubModel(ModelSpec spec) => HubModelReference.IsHubSource(spec.Source);

    /// <summary>
    /// For an hf:// model: adds the cache volume, the download init container (<paramref name="image"/> with
    /// <paramref name="downloadArgs"/>) and, to every main container, the cache mounted read-only with
    /// HF_HOME and HF_HUB_OFFLINE=1. Other sources: the template is returned unchanged.
    /// </summary>
    private static V1PodTemplateSpec WithHubDownload(V1PodTemplateSpec template, LongContextModel model, string image, string? pullPolicy, IList<string> downloadArgs)
    {
        var spec = model.Spec.Model;
        if (!IsHubModel(spec)) return template;
        var pod = template.Spec;
        pod.Volumes.Add(spec.CacheClaim is { Length: > 0 } claim
            ? new V1Volume { Name = HubCacheVolume, PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = claim } }
            : new V1Volume { Name = HubCacheVolume, EmptyDir = new V1EmptyDirVolumeSource() });
        var env = new List<V1EnvVar> { new() { Name = "HF_HOME", Value = HubCacheMountPath } };
        if (spec.HubEndpoint is { Length: > 0 } endpoint) env.Add(new V1EnvVar { Name = "HF_ENDPOINT", Value = endpoint });
        if (spec.HubTokenSecret is { Length: > 0 } secret)
        {
            env.Add(new V1EnvVar
            {
                Name = "HF_TOKEN",
                ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = secret, Key = HubTokenKey, Optional = false } },
            });
        }
        pod.InitContainers =
        [
            new V1Container
            {
                Name = HubDownloadContainer,
                Image = image,
                ImagePullPolicy = pullPolicy,
                Args = [.. downloadArgs],
                Env = env,
                // Writes the cache; /tmp for the runtime's own scratch files (the root filesystem is read-only).
                VolumeMounts = [new V1VolumeMount { Name = HubCacheVolume, MountPath = HubCacheMountPath }, new V1VolumeMount { Name = "tmp", MountPath = "/tmp" }],
                SecurityContext = ContainerSecurity(),
            },
        ];
        foreach (var container in pod.Containers)
        {
            container.Env ??= [];
            container.Env.Add(new V1EnvVar { Name = "HF_HOME", Value = HubCacheMountPath });
            // The cache is complete once the init container succeeded: load from it only.
            container.Env.Add(new V1EnvVar { Name = "HF_HUB_OFFLINE", Value = "1" });
            container.VolumeMounts ??= [];
            container.VolumeMounts.Add(new V1VolumeMount { Name = HubCacheVolume, MountPath = HubCacheMountPath, ReadOnlyProperty = true });
        }
        return template;
    }
}
