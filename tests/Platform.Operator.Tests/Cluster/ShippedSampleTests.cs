// The shipped sample resource, exactly as it is in crds/samples (bfloat16, host KV tier,
// DistAttention, two GPU workers), applied with the real kubectl and run by the test kubelet:
// it must become Ready and serve a chat completion through its router pod, with the official
// OpenAI client. Only the content of its PVC differs from a cluster: a small random model of
// the sample's architecture (qwen2) at the path the sample names, and the node: it has no GPU, so
// the worker pods, which the operator starts with --device cuda and a GPU request, compute on its
// CPU (RunningCluster's worker entrypoint; the worker refuses a missing GPU, OperatorArgsTests).
using OpenAI.Chat;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests.Cluster;

[Collection(ClusterCollection.Name)]
public sealed class ShippedSampleTests
{
    /// <summary>The sample's model, small: the qwen2 architecture with its 1M-token context.</summary>
    public static readonly RandomModelOptions SampleModel = new() { Preset = "tiny", ModelType = "qwen2", Dtype = SafetensorsDtype.BF16, Seed = 7, MaxPositionEmbeddings = 1_048_576 };

    [ClusterFact]
    public async Task The_shipped_sample_becomes_ready_and_serves_a_chat_completion_through_its_router_pod()
    {
        await using var running = await RunningCluster.StartAsync(new Dictionary<string, RandomModelOptions> { ["qwen2.5-7b-1m"] = SampleModel });
        (await running.KubectlAsync("apply", "--validate=false", "-f", RepoPaths.Sample)).EnsureSuccess();

        var model = await running.WaitForConditionAsync("qwen-1m", "Ready", "True", TimeSpan.FromMinutes(4));
        // The pods a GPU node would get: the GPU requested and the engine told to use it.
        var workerSet = (await running.KubectlAsync("get", "statefulset", Names.WorkerStatefulSet("qwen-1m"), "-o", "json")).EnsureSuccess().Output;
        Assert.Contains("\"nvidia.com/gpu\": \"1\"", workerSet, StringComparison.Ordinal);
        Assert.Matches("\"--device\",\\s*\"cuda\"", workerSet);
        Assert.Equal(2, model.Status!.ReadyReplicas);
        Assert.Equal(Names.Endpoint("qwen-1m", running.Namespace), model.Status.Endpoint);
        // Two worker pods and one router pod, all ready, none restarted.
        var pods = running.Kubelet.Pods;
        Assert.Equal(3, pods.Count(p => p.Ready));
        Assert.True(pods.All(p => p.Restarts == 0), "a pod restarted:\n" + running.Kubelet.Logs());

        var chat = running.Chat("qwen-1m", "qwen-1m");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Hello from the cluster")], options);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(8, completion.Usage.OutputTokenCount);

        // Streaming gives the same greedy text.
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Hello from the cluster")], options))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(completion.Content[0].Text, streamed.ToString());

        // kubectl sees what a user would.
        var get = (await running.KubectlAsync("get", "lcm", "qwen-1m")).EnsureSuccess();
        Assert.Matches(@"qwen-1m\s+2\s+2\s+", get.Output);
    }
}

/// <summary>Cluster tests start many processes: one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterCollection
{
    public const string Name = "cluster";
}
