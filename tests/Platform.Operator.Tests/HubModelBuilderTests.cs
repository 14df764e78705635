// The pods the builders make for an hf:// model: a hub cache volume (the cacheClaim or an
// emptyDir) at /hf in every container; an init container "download" running the pod's own image
// with --download-only, the token from the Secret by reference and the mirror as HF_ENDPOINT;
// main containers that load the same source offline (HF_HUB_OFFLINE=1) and never get the token.
// Other sources keep their pods exactly as before.
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class HubModelBuilderTests
{
    private static readonly ImageDefaults Images = new("reg/platform-worker:1", "reg/platform-router:1");

    private static LongContextModel HubModel(Action<ModelSpec>? change = null)
    {
        var model = Models.New("m", "ns", replicas: 2);
        model.Metadata.Uid = "uid-1";
        model.Spec.Model.Source = "hf://acme/tiny@v1";
        change?.Invoke(model.Spec.Model);
        return model;
    }

    private static IEnumerable<(string Image, V1PodSpec Pod)> Pods(LongContextModel model)
    {
        var children = ChildObjects.Build(model, Images);
        yield return (Images.WorkerImage, children.Workers.Spec.Template.Spec);
        yield return (Images.RouterImage, children.Router.Spec.Template.Spec);
    }

    private static string? Env(V1Container c, string name) => c.Env?.SingleOrDefault(e => e.Name == name)?.Value;

    [Fact]
    public void Each_pod_downloads_in_an_init_container_of_its_own_image_and_serves_from_the_cache_offline()
    {
        foreach (var (image, pod) in Pods(HubModel(m => { m.HubEndpoint = "http://mirror.local:8080/"; m.HubTokenSecret = "hub-token"; })))
        {
            var cache = Assert.Single(pod.Volumes, v => v.Name == ChildObjects.HubCacheVolume);
            Assert.NotNull(cache.EmptyDir);
            var init = Assert.Single(pod.InitContainers);
            Assert.Equal((ChildObjects.HubDownloadContainer, image), (init.Name, init.Image));
            Assert.Equal("hf://acme/tiny@v1", init.Args[init.Args.IndexOf("--model") + 1]);
            Assert.Equal("true", init.Args[init.Args.IndexOf("--download-only") + 1]);
            Assert.Equal(("/hf", "http://mirror.local:8080/"), (Env(init, "HF_HOME"), Env(init, "HF_ENDPOINT")));
            Assert.Null(Env(init, "HF_HUB_OFFLINE"));
            var token = Assert.Single(init.Env, e => e.Name == "HF_TOKEN");
            Assert.Null(token.Value);
            Assert.Equal(("hub-token", ChildObjects.HubTokenKey, false), (token.ValueFrom.SecretKeyRef.Name, token.ValueFrom.SecretKeyRef.Key, token.ValueFrom.SecretKeyRef.Optional));
            Assert.Contains(init.VolumeMounts, m => m.Name == ChildObjects.HubCacheVolume && m.MountPath == "/hf" && m.ReadOnlyProperty != true);
            Assert.False(init.SecurityContext.AllowPrivilegeEscalation);
            Assert.Equal(["ALL"], init.SecurityContext.Capabilities.Drop);

            var main = Assert.Single(pod.Containers);
            Assert.Equal("hf://acme/tiny@v1", main.Args[main.Args.IndexOf("--model") + 1]);
            Assert.DoesNotContain("--download-only", main.Args);
            Assert.Equal(("/hf", "1"), (Env(main, "HF_HOME"), Env(main, "HF_HUB_OFFLINE")));
            Assert.DoesNotContain(main.Env, e => e.Name is "HF_TOKEN" or "HF_ENDPOINT");
            Assert.Contains(main.VolumeMounts, m => m.Name == ChildObjects.HubCacheVolume && m.MountPath == "/hf" && m.ReadOnlyProperty == true);
            // No model volume: nothing to mount but the cache.
            Assert.DoesNotContain(pod.Volumes, v => v.Name == "model");
        }
    }

    [Fact]
    public void A_cache_claim_backs_the_cache_and_a_public_repo_needs_no_token_or_endpoint()
    {
        foreach (var (_, pod) in Pods(HubModel(m => m.CacheClaim = "hf-shared")))
        {
            var cache = Assert.Single(pod.Volumes, v => v.Name == ChildObjects.HubCacheVolume);
            Assert.Equal("hf-shared", cache.PersistentVolumeClaim.ClaimName);
            Assert.NotEqual(true, cache.PersistentVolumeClaim.ReadOnlyProperty);
            var init = Assert.Single(pod.InitContainers);
            Assert.DoesNotContain(init.Env, e => e.Name is "HF_TOKEN" or "HF_ENDPOINT");
        }
    }

    [Fact]
    public void Other_sources_get_no_init_container_and_no_hub_cache()
    {
        var model = HubModel(m => m.Source = "pvc://models/tiny");
        foreach (var (_, pod) in Pods(model))
        {
            Assert.Null(pod.InitContainers);
            Assert.DoesNotContain(pod.Volumes, v => v.Name == ChildObjects.HubCacheVolume);
            Assert.DoesNotContain(pod.Containers[0].Env, e => e.Name.StartsWith("HF_", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void The_router_init_container_runs_platform_router_with_its_own_switches()
    {
        var router = ChildObjects.Build(HubModel(), Images).Router.Spec.Template.Spec;
        var init = Assert.Single(router.InitContainers);
        Assert.Equal(["--model", "hf://acme/tiny@v1", "--download-only", "true"], init.Args);
        foreach (var option in init.Args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
            Assert.True(Platform.Router.RouterApp.Switches.ContainsKey(option), $"platform-router has no switch {option}");
    }
}
