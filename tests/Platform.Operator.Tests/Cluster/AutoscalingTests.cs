// The built-in autoscaler end to end: with autoscaling enabled and an API key on the router,
// concurrent long prompts sent through the router pod queue prefill work on the worker; the
// operator reads the router's real /metrics (the Core contract, scraped without the key as
// Prometheus would) and raises the replica count; when the load stops the count comes back to
// the minimum after the scale-down stabilisation window.
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using k8s;
using k8s.Models;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests.Cluster;

[Collection(ClusterCollection.Name)]
public sealed class AutoscalingTests
{
    private const string ApiKey = "sk-cluster-test";

    [ClusterFact]
    public async Task Long_prompts_through_the_router_scale_the_workers_up_and_idle_scales_them_back_down()
    {
        await using var running = await RunningCluster.StartAsync(RunningCluster.TinyPvc(seed: 5));
        await running.Client.CoreV1.CreateNamespacedSecretAsync(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "router-key" },
            StringData = new Dictionary<string, string> { ["key"] = ApiKey },
        }, running.Namespace);
        await Models.CreateAsync(running.Client, RunningCluster.TinyModel(running.Namespace, "a", 1, spec =>
        {
            // Small prefill chunks keep a queue on the worker while prompts arrive.
            spec.Worker.Engine.MaxBatchTokens = 32;
            spec.Autoscaling = new AutoscalingSpec
            {
                Enabled = true,
                MinReplicas = 1,
                MaxReplicas = 3,
                TargetQueuedPrefillTokensPerReplica = 1000,
                ScaleUpStabilizationSeconds = 0,
                ScaleDownStabilizationSeconds = 5,
                IntervalSeconds = 1,
            };
            spec.Router.ApiKeySecretRef = new SecretKeyRef { Name = "router-key", Key = "key" };
        }));
        await running.WaitForConditionAsync("a", "Ready", "True", TimeSpan.FromMinutes(3));

        var url = new Uri(Names.Endpoint("a", running.Namespace) + "/v1/completions");
        var http = running.Http();
        using (var unauthorized = await http.PostAsJsonAsync(url, new { model = "a", prompt = "hi", max_tokens = 1 }))
            Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);

        // The clients stop sending once the scale-up is seen, and the requests then in flight finish: the engine shares
        // prefill between concurrent prompts, so under this load few complete before the second worker is up.
        using var load = new CancellationTokenSource();
        int sent = 0, failed = 0;
        var clients = Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
        {
            var random = new Random(c);
            while (!load.IsCancellationRequested)
            {
                // 3,000 fresh tokens each time: no prefix to reuse, all of it queued prefill.
                var prompt = Enumerable.Range(0, 3000).Select(_ => random.Next(3, 500)).ToArray();
                using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = JsonContent.Create(new { model = "a", prompt, max_tokens = 1 }) };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ApiKey);
                using var response = await http.SendAsync(request);
                Interlocked.Increment(ref sent);
                if (!response.IsSuccessStatusCode) Interlocked.Increment(ref failed);
            }
        })).ToList();

        try
        {
            var scaled = await Waiter.ModelAsync(running.Client, running.Namespace, "a", m => m?.Spec.Replicas >= 2, TimeSpan.FromSeconds(90));
            Assert.InRange(scaled!.Spec.Replicas, 2, 3);
            await running.WaitForPodsAsync(pods => pods.Count(p => p.Name.StartsWith("a-worker-", StringComparison.Ordinal) && p.Ready) >= 2, TimeSpan.FromMinutes(2), "a second worker ready");
        }
        finally
        {
            await load.CancelAsync();
            await Task.WhenAll(clients).WaitAsync(TimeSpan.FromMinutes(2));
        }
        Assert.True(sent >= 8 && failed == 0, $"{failed} of {sent} requests failed under load");

        // Idle: back to the minimum once the scale-down window has passed.
        await Waiter.ModelAsync(running.Client, running.Namespace, "a", m => m?.Spec.Replicas == 1, TimeSpan.FromSeconds(90));
        await running.WaitForPodsAsync(pods => pods.Count(p => p.Name.StartsWith("a-worker-", StringComparison.Ordinal)) == 1, TimeSpan.FromMinutes(1), "scaled back to one worker");
    }
}
