// A LongContextModel with source hf://acme/tiny on the test kubelet: a FakeHub on loopback
// (pods share the node's network namespace, as the test kubelet runs them, so they reach
// 127.0.0.1 and the hub's storage host 127.0.0.2 directly) serves a private repository; the
// token comes from a Secret (hubTokenSecret) and the hub's address from hubEndpoint. Each pod's
// download init container fills its hub cache and exits 0 before the worker or router starts;
// chat through the router pod works; the hub served the weights once per worker pod's cache (the
// router pod fetches only the tokenizer and configs), or once in all when the pods share a
// cacheClaim. A wrong token keeps the pods in Init with the init
// container's failure in their status and log, and the model not Ready.
using k8s;
using k8s.Models;
using OpenAI.Chat;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests.Cluster;

[Collection(ClusterCollection.Name)]
public sealed class HubModelClusterTests
{
    private const string Token = "hf_cluster_test_token";

    private static async Task<(FakeHub Hub, string Directory, string[] Weights)> StartHubAsync()
    {
        string dir = Path.Combine("/var/tmp", "fakehub-" + Guid.NewGuid().ToString("N")[..8]);
        RandomModelGenerator.Create(dir, new RandomModelOptions { Preset = "tiny", ModelType = "llama", Dtype = SafetensorsDtype.BF16, Seed = 11 });
        var hub = await FakeHub.StartAsync(dir, "acme/tiny");
        hub.Token = Token;
        return (hub, dir, [.. Directory.GetFiles(dir, "*.safetensors").Select(Path.GetFileName)!]);
    }

    private static async Task SecretAsync(RunningCluster running, string name, string token) =>
        await running.Client.CoreV1.CreateNamespacedSecretAsync(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = name },
            StringData = new Dictionary<string, string> { ["HF_TOKEN"] = token },
        }, running.Namespace);

    private static LongContextModel HubModel(RunningCluster running, FakeHub hub, string name, int replicas, string secret, string? cacheClaim = null) =>
        RunningCluster.TinyModel(running.Namespace, name, replicas, spec =>
        {
            spec.Model.Source = "hf://acme/tiny";
            spec.Model.HubEndpoint = hub.Endpoint.ToString();
            spec.Model.HubTokenSecret = secret;
            spec.Model.CacheClaim = cacheClaim;
        });

    private static async Task<List<V1Pod>> PodsAsync(RunningCluster running, string model) =>
        [.. (await running.Client.CoreV1.ListNamespacedPodAsync(running.Namespace)).Items.Where(p => p.Metadata.Name.StartsWith(model + "-", StringComparison.Ordinal))];

    private static async Task ChatAsync(RunningCluster running, string model)
    {
        var completion = (await running.Chat(model, model).CompleteChatAsync([new UserChatMessage("Hello from the hub")], new ChatCompletionOptions { MaxOutputTokenCount = 4, Temperature = 0 })).Value;
        Assert.Equal(4, completion.Usage.OutputTokenCount);
    }

    [ClusterFact]
    public async Task A_private_hub_model_downloads_in_each_pods_init_container_and_serves_and_a_wrong_token_stays_in_init()
    {
        var (hub, dir, weights) = await StartHubAsync();
        await using var _ = hub;
        await using var running = await RunningCluster.StartAsync(new Dictionary<string, RandomModelOptions>());
        await SecretAsync(running, "hub-token", Token);
        await Models.CreateAsync(running.Client, HubModel(running, hub, "m", replicas: 1, secret: "hub-token"));
        await running.WaitForConditionAsync("m", "Ready", "True", TimeSpan.FromMinutes(3));

        var pods = await PodsAsync(running, "m");
        Assert.Equal(2, pods.Count); // m-worker-0 and the router pod
        foreach (var pod in pods)
        {
            var init = Assert.Single(pod.Status.InitContainerStatuses);
            Assert.Equal(("download", 0, "Completed"), (init.Name, init.State.Terminated?.ExitCode, init.State.Terminated?.Reason));
            Assert.Equal("True", pod.Status.Conditions.Single(c => c.Type == "Initialized").Status);
            Assert.Equal("Running", pod.Status.Phase);
            // The token went to the download step only.
            Assert.DoesNotContain(pod.Spec.Containers[0].Env, e => e.Name == "HF_TOKEN");
            Assert.Contains("acme/tiny", running.Kubelet.Log(pod.Metadata.Name), StringComparison.Ordinal);
        }
        await ChatAsync(running, "m");
        // Each pod has its own (emptyDir) cache: the weights crossed once per worker pod, never again (the main containers
        // are offline); the router pod took the tokenizer and configs only.
        foreach (var file in weights) Assert.Equal(1, hub.Count("storage:" + file));
        Assert.Equal(pods.Count, hub.Count("get:tokenizer.json"));

        // A wrong token: the download fails, is retried with backoff, and the pods stay in Init showing why.
        await SecretAsync(running, "wrong-token", "hf_not_the_token");
        await Models.CreateAsync(running.Client, HubModel(running, hub, "bad", replicas: 1, secret: "wrong-token"));
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        V1Pod worker;
        while (true)
        {
            worker = (await PodsAsync(running, "bad")).FirstOrDefault(p => p.Metadata.Name == "bad-worker-0")!;
            if (worker?.Status?.InitContainerStatuses is [{ RestartCount: >= 1, LastState.Terminated.ExitCode: not 0 }]) break;
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"the failing init container was not retried; status: {(worker?.Status is { } st ? KubernetesJson.Serialize(st) : "none")}\n{running.Kubelet.Logs()}");
            await Task.Delay(200);
        }
        Assert.Equal("Pending", worker.Status.Phase);
        Assert.Equal("False", worker.Status.Conditions.Single(c => c.Type == "Initialized").Status);
        Assert.DoesNotContain(worker.Status.ContainerStatuses, c => c.State.Running is not null);
        Assert.Contains("HF_TOKEN was refused", running.Kubelet.Log("bad-worker-0"), StringComparison.Ordinal);
        // What kubectl reads to print Init:Error / Init:CrashLoopBackOff (the fake API server has no server-side pod table).
        var get = (await running.KubectlAsync("get", "pod", "bad-worker-0", "-o", "jsonpath={.status.initContainerStatuses[0].name} {.status.initContainerStatuses[0].lastState.terminated.exitCode}")).EnsureSuccess();
        Assert.Equal("download 1", get.Output.Trim());
        var bad = await Models.GetAsync(running.Client, running.Namespace, "bad");
        Assert.False(Models.HasCondition(bad, "Ready", "True"));
        Directory.Delete(dir, recursive: true);
    }

    [ClusterFact]
    public async Task Pods_sharing_a_cache_claim_download_each_file_once_in_all()
    {
        var (hub, dir, weights) = await StartHubAsync();
        await using var _ = hub;
        await using var running = await RunningCluster.StartAsync(new Dictionary<string, RandomModelOptions>());
        await SecretAsync(running, "hub-token", Token);
        await Models.CreateAsync(running.Client, HubModel(running, hub, "m", replicas: 2, secret: "hub-token", cacheClaim: RunningCluster.HubCacheClaim));
        await running.WaitForConditionAsync("m", "Ready", "True", TimeSpan.FromMinutes(3));
        var pods = await PodsAsync(running, "m");
        Assert.Equal(3, pods.Count);
        Assert.All(pods, p => Assert.Equal(0, Assert.Single(p.Status.InitContainerStatuses).State.Terminated?.ExitCode));
        await ChatAsync(running, "m");
        // Three init containers on one cache (they ran at once; a lock per blob lets one fetch): one transfer per file.
        foreach (var file in weights) Assert.Equal(1, hub.Count("storage:" + file));
        Assert.Equal(1, hub.Count("get:tokenizer.json"));
        Directory.Delete(dir, recursive: true);
    }
}
