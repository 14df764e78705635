// The life of a LongContextModel on the test kubelet, as a user drives it with kubectl: scaling
// up adds a worker that the router finds through its EndpointSlices and uses; scaling down
// drains a worker without failing what it is serving; DistAttention serves a prompt that fits
// on no single worker pod; a worker killed mid-stream ends that stream with an error (never a
// clean-looking "stop") and comes back; deleting the model stops every process and purges its
// keys from the shared KV store.
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using k8s.Models;
using OpenAI.Chat;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Core.Telemetry;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;
using StackExchange.Redis;

namespace Platform.Operator.Tests.Cluster;

[Collection(ClusterCollection.Name)]
public sealed class ClusterLifecycleTests
{
    private static Dictionary<string, RandomModelOptions> TinyPvc() => RunningCluster.TinyPvc(seed: 3);

    private static LongContextModel Model(string ns, string name, int replicas, Action<LongContextModelSpec>? change = null) =>
        RunningCluster.TinyModel(ns, name, replicas, change);

    /// <summary>One /v1/completions call through the model's router Service: the status and the body.</summary>
    private static async Task<(int Status, string Text)> PostCompletionAsync(RunningCluster running, string name, object body)
    {
        using var response = await running.Http().PostAsJsonAsync(new Uri(Names.Endpoint(name, running.Namespace) + "/v1/completions"), body);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private static async Task<JsonObject> CompleteAsync(RunningCluster running, string name, object body)
    {
        var (status, text) = await PostCompletionAsync(running, name, body);
        Assert.True(status is >= 200 and < 300, $"{status}: {text}");
        return JsonNode.Parse(text)!.AsObject();
    }

    /// <summary>
    /// Like CompleteAsync, retrying only while the router answers 503 no_workers (its pool is empty) or its Service has
    /// no ready endpoint, up to <paramref name="timeout"/>. The router's readiness is "serving" (docs/router.md): with its
    /// only worker gone its probe fails and it leaves its Service, and it comes back one probe period after the worker
    /// does, so in between a connection finds no endpoint (refused on a real ClusterIP, closed by the test proxy).
    /// </summary>
    private static async Task<JsonObject> CompleteOnceAWorkerIsBackAsync(RunningCluster running, string name, object body, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            int status;
            string text;
            try
            {
                (status, text) = await PostCompletionAsync(running, name, body);
            }
            catch (HttpRequestException e) when (NoEndpoint(e) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
                continue;
            }
            if (status is >= 200 and < 300) return JsonNode.Parse(text)!.AsObject();
            bool noWorkers = status == 503 && text.Contains("\"no_workers\"", StringComparison.Ordinal);
            Assert.True(noWorkers && DateTime.UtcNow < deadline, $"{status}: {text}\npods: {string.Join(", ", running.Kubelet.Pods)}");
            await Task.Delay(200);
        }
    }

    /// <summary>A connection refused, or closed before any response: what a Service without a ready endpoint gives.</summary>
    private static bool NoEndpoint(HttpRequestException e) =>
        (e.InnerException is HttpIOException io ? io.HttpRequestError : e.HttpRequestError) is HttpRequestError.ConnectionError or HttpRequestError.ResponseEnded;

    /// <summary>One worker pod's own /metrics (by pod IP), as Prometheus would scrape it.</summary>
    private static async Task<double> WorkerMetricAsync(RunningCluster running, string pod, string metric)
    {
        var ip = running.Kubelet.Pods.Single(p => p.Name == pod).Ip;
        var text = await running.Http().GetStringAsync(new Uri($"http://{ip}:{Names.HttpPort}/metrics"));
        return text.Split('\n').Where(l => l.StartsWith(metric, StringComparison.Ordinal) && l.Length > metric.Length && l[metric.Length] is ' ' or '{')
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>A streamed chat completion over raw SSE: completion tokens (from the usage chunk), the finish reason
    /// and an error event's message, if any.</summary>
    private static async Task<(int Tokens, string? Finish, string? Error)> StreamAsync(RunningCluster running, string name, string content, int maxTokens, TaskCompletionSource firstChunk)
    {
        var body = new { model = name, messages = new[] { new { role = "user", content } }, max_tokens = maxTokens, temperature = 0, ignore_eos = true, stream = true, stream_options = new { include_usage = true } };
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(Names.Endpoint(name, running.Namespace) + "/v1/chat/completions")) { Content = JsonContent.Create(body) };
        using var response = await running.Http().SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        int tokens = 0;
        string? finish = null, error = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
            firstChunk.TrySetResult();
            var chunk = JsonNode.Parse(line[6..])!;
            if (chunk["error"] is { } e) error = e["message"]?.GetValue<string>() ?? e.ToJsonString();
            if (chunk["usage"]?["completion_tokens"] is { } used) tokens = used.GetValue<int>();
            if (chunk["choices"] is JsonArray { Count: > 0 } choices && choices[0]?["finish_reason"]?.GetValue<string>() is { } reason) finish = reason;
        }
        return (tokens, finish, error);
    }

    [ClusterFact]
    public async Task Kubectl_scale_adds_a_worker_the_router_uses_and_scaling_down_drains_without_failing_a_request()
    {
        await using var running = await RunningCluster.StartAsync(TinyPvc());
        await Models.CreateAsync(running.Client, Model(running.Namespace, "m", 2));
        await running.WaitForConditionAsync("m", "Ready", "True", TimeSpan.FromMinutes(3));

        (await running.KubectlAsync("scale", "lcm/m", "--replicas", "3")).EnsureSuccess();
        await running.WaitForPodsAsync(pods => pods.Count(p => p.Name.StartsWith("m-worker-", StringComparison.Ordinal) && p.Ready) == 3, TimeSpan.FromMinutes(2), "a third worker ready");
        await Waiter.ModelAsync(running.Client, running.Namespace, "m", m => m?.Status?.ReadyReplicas == 3, TimeSpan.FromMinutes(1));

        // New prefixes go to the worker holding the fewest blocks: the new one gets requests through the router once
        // the router has it in its pool (EndpointSlice, then a health poll: it may lag the pod's readiness a little).
        var until = DateTime.UtcNow.AddSeconds(60);
        for (int i = 0; DateTime.UtcNow < until && await WorkerMetricAsync(running, "m-worker-2", VllmMetricNames.GenerationTokensTotal) == 0; i++)
        {
            await CompleteAsync(running, "m", new { model = "m", prompt = $"request {i} for the new worker", max_tokens = 4, temperature = 0 });
            await Task.Delay(100);
        }
        Assert.True(await WorkerMetricAsync(running, "m-worker-2", VllmMetricNames.GenerationTokensTotal) > 0, "the router never sent a request to the worker added by kubectl scale");

        // Streams on every worker (each well inside the worker's drain grace), then scale down: the highest
        // ordinal drains, and every stream completes. Raw SSE with ignore_eos, so a random model's EOS cannot end one early.
        var firstChunk = new List<TaskCompletionSource>();
        var streams = new List<Task<(int Tokens, string? Finish, string? Error)>>();
        // Nine streams of 800 tokens over three workers: long enough that those on the highest ordinal still run
        // when it is scaled down (placement decides how many land there; with fewer, none sometimes did).
        for (int i = 0; i < 9; i++)
        {
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            firstChunk.Add(started);
            streams.Add(StreamAsync(running, "m", $"stream {i}: tell me everything", 800, started));
        }
        await Task.WhenAll(firstChunk.Select(f => f.Task)).WaitAsync(TimeSpan.FromMinutes(1));
        double onDrained = await WorkerMetricAsync(running, "m-worker-2", VllmMetricNames.NumRequestsRunning);
        (await running.KubectlAsync("scale", "lcm/m", "--replicas", "2")).EnsureSuccess();
        var results = await Task.WhenAll(streams).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(results.All(r => (r.Tokens, r.Finish, r.Error) == (800, "length", null)),
            $"streams ended early: {string.Join(", ", results)}\n{running.Kubelet.Logs(6000)}");
        Assert.True(onDrained > 0, "no stream was running on the worker that scaled down, so its drain was not exercised");
        await running.WaitForPodsAsync(pods => !pods.Any(p => p.Name == "m-worker-2"), TimeSpan.FromMinutes(1), "the scaled-down worker gone");
    }

    [ClusterFact]
    public async Task A_prompt_that_fits_on_no_single_worker_pod_is_served_across_pods_with_dist_attention()
    {
        await using var running = await RunningCluster.StartAsync(TinyPvc());
        // Each worker holds 1,024 tokens; the prompt has 1,500. The peers find each other by their StatefulSet names.
        await Models.CreateAsync(running.Client, Model(running.Namespace, "d", 2, s =>
        {
            s.Worker.Engine.KvCacheTokens = 1024;
            s.KvCache.DistAttention.Enabled = true;
        }));
        await running.WaitForConditionAsync("d", "Ready", "True", TimeSpan.FromMinutes(3));
        var prompt = Enumerable.Range(0, 1500).Select(i => (i * 37 + 11) % 500).ToArray();
        var result = await CompleteAsync(running, "d", new { model = "d", prompt, max_tokens = 8, temperature = 0 });
        Assert.Equal(1500, (int)result["usage"]!["prompt_tokens"]!);
        Assert.Equal(8, (int)result["usage"]!["completion_tokens"]!);

        // Without DistAttention the same prompt is refused with the sizes, not served wrong.
        await Models.UpdateSpecAsync(running.Client, running.Namespace, "d", s => s.KvCache.DistAttention.Enabled = false);
        await Waiter.ModelAsync(running.Client, running.Namespace, "d", m => m is { } x && x.Status?.ObservedGeneration == x.Metadata.Generation && Models.HasCondition(x, "Ready", "True"), TimeSpan.FromMinutes(3));
        await running.WaitForPodsAsync(pods => pods.Count(p => p.Name.StartsWith("d-worker-", StringComparison.Ordinal) && p.Ready && !p.Terminating) == 2
            && pods.Count(p => p.Name.StartsWith("d-worker-", StringComparison.Ordinal)) == 2, TimeSpan.FromMinutes(2), "workers restarted without DistAttention");
        using var refused = await running.Http().PostAsJsonAsync(new Uri(Names.Endpoint("d", running.Namespace) + "/v1/completions"), new { model = "d", prompt, max_tokens = 8 });
        Assert.Equal(400, (int)refused.StatusCode);
    }

    [ClusterFact]
    public async Task A_worker_pod_killed_mid_stream_ends_the_stream_with_an_error_and_is_restarted()
    {
        await using var running = await RunningCluster.StartAsync(TinyPvc());
        await Models.CreateAsync(running.Client, Model(running.Namespace, "k", 1));
        await running.WaitForConditionAsync("k", "Ready", "True", TimeSpan.FromMinutes(3));
        var chat = running.Chat("k", "k");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 3000, Temperature = 0 };
        int chunks = 0;
        ChatFinishReason? reason = null;
        Exception? error = null;
        try
        {
            await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("a long answer, please")], options))
            {
                reason ??= update.FinishReason;
                if (++chunks == 3) Assert.True(running.Kubelet.Signal("k-worker-0", 9), "no worker process to kill");
            }
        }
        catch (Exception e) when (e is System.ClientModel.ClientResultException or IOException or HttpRequestException or InvalidOperationException)
        {
            error = e;
        }
        Assert.True(error is not null || reason is not (ChatFinishReason.Stop or ChatFinishReason.Length),
            $"the stream of a killed worker ended as if complete: finish_reason {reason} after {chunks} chunks");

        // The kubelet restarts the container; the model is ready again and serves.
        await running.WaitForPodsAsync(pods => pods.Any(p => p.Name == "k-worker-0" && p.Restarts >= 1 && p.Ready), TimeSpan.FromMinutes(2), "the killed worker restarted and ready");
        await running.WaitForConditionAsync("k", "Ready", "True", TimeSpan.FromMinutes(1));
        // The router re-admits the worker from its EndpointSlice and a health poll, a moment after the pod is ready;
        // meanwhile the one answer allowed is the retryable 503 no_workers.
        var after = await CompleteOnceAWorkerIsBackAsync(running, "k", new { model = "k", prompt = "after the restart", max_tokens = 4, temperature = 0 }, TimeSpan.FromMinutes(1));
        Assert.Equal(4, (int)after["usage"]!["completion_tokens"]!);
    }

    [ClusterFact]
    public async Task Deleting_the_model_stops_every_process_and_purges_its_keys_from_the_shared_store()
    {
        if (RedisKvStorePurgerTests.RedisServer is null) throw new InvalidOperationException("redis-server is not installed; ./test.sh installs it");
        await using var redis = await RedisServerProcess.StartAsync();
        await using var running = await RunningCluster.StartAsync(TinyPvc());
        await Models.CreateAsync(running.Client, Model(running.Namespace, "p", 2, s =>
        {
            s.KvCache.HostMemory = "64Mi";
            s.KvCache.Remote = new RemoteKvSpec { Redis = new RedisSpec { Address = redis.Address }, PurgeOnDelete = true };
        }));
        await running.WaitForConditionAsync("p", "Ready", "True", TimeSpan.FromMinutes(3));
        var prompt = Enumerable.Range(0, 100).Select(i => (i * 13 + 5) % 500).ToArray();
        await CompleteAsync(running, "p", new { model = "p", prompt, max_tokens = 4, temperature = 0 });

        await using var mux = await ConnectionMultiplexer.ConnectAsync(redis.Address + ",allowAdmin=true");
        var server = mux.GetServer(mux.GetEndPoints()[0]);
        string prefix = Names.KvKeyPrefix(running.Namespace, "p");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!server.Keys(pattern: prefix + "*").Any() && DateTime.UtcNow < deadline) await Task.Delay(200);
        Assert.True(server.Keys(pattern: prefix + "*").Any(), $"no key under {prefix} after a 100-token prompt");
        var pids = running.Kubelet.Pids;
        Assert.Equal(3, pids.Count);

        (await running.KubectlAsync("delete", "lcm", "p", "--wait=false")).EnsureSuccess();
        await Waiter.ModelAsync(running.Client, running.Namespace, "p", m => m is null, TimeSpan.FromMinutes(1));
        await running.WaitForPodsAsync(pods => pods.Count == 0, TimeSpan.FromMinutes(1), "every pod gone");
        Assert.All(pids, pid => Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} still runs"));
        Assert.Empty(server.Keys(pattern: prefix + "*"));
    }
}
