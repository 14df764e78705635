// The shipped path, run for real on one machine: the fake API server (HTTPS, so pods use the
// in-cluster configuration), the operator in-process as Program.cs builds it, and the test
// kubelet running the operator's worker and router pods as processes from the project's own
// binaries (platform-worker.dll, platform-router.dll, copied next to this test assembly).
// The one thing a test supplies that a cluster would not is the content of the model PVC: a
// small random model of the sample's architecture, under the claim name the resource names.
// A second, empty claim "hf-cache" is there for models that keep their hub cache on a PVC.
using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text.Json.Nodes;
using k8s;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;
using OpenAI.Chat;
using Platform.Core.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;
using Platform.Testing.Kubernetes.Kubelet;

namespace Platform.Operator.Tests.Cluster;

public sealed class RunningCluster : IAsyncDisposable
{
    private readonly List<HttpClient> _clients = [];

    private RunningCluster(TestCluster cluster, TestKubelet kubelet, string modelsDirectory)
    {
        Cluster = cluster;
        Kubelet = kubelet;
        ModelsDirectory = modelsDirectory;
    }

    public TestCluster Cluster { get; }

    /// <summary>The empty claim a model may name as spec.model.cacheClaim.</summary>
    public const string HubCacheClaim = "hf-cache";

    public TestKubelet Kubelet { get; }

    public OperatorInstance Operator { get; private set; } = null!;

    /// <summary>The local directory behind the PVC named "models".</summary>
    public string ModelsDirectory { get; }

    public IKubernetes Client => Cluster.Client;

    public string Namespace => Cluster.Namespace;

    /// <param name="models">Model directories to create in the PVC: path under the claim → generator options.</param>
    /// <param name="operatorArgs">Extra operator settings, e.g. a shorter autoscaler interval.</param>
    public static async Task<RunningCluster> StartAsync(IReadOnlyDictionary<string, RandomModelOptions> models, params string[] operatorArgs)
    {
        var cluster = await TestCluster.StartAsync(tls: true);
        var state = Path.Combine("/var/tmp", "platform-cluster-" + Guid.NewGuid().ToString("N")[..8]);
        string modelsDir = Path.Combine(state, "pv-models");
        string hubCacheDir = Path.Combine(state, "pv-hf-cache");
        Directory.CreateDirectory(hubCacheDir);
        foreach (var (path, options) in models) RandomModelGenerator.Create(Path.Combine(modelsDir, path), options);
        string bin = AppContext.BaseDirectory;
        var kubelet = TestKubelet.Start(cluster.RequireFake, new TestKubeletOptions
        {
            Namespace = cluster.Namespace,
            StateDirectory = Path.Combine(state, "node"),
            Claims = new Dictionary<string, string> { ["models"] = modelsDir, [HubCacheClaim] = hubCacheDir },
            // The images' ENTRYPOINTs (operator/worker/router Dockerfiles), from this build.
            // This node has no GPU: a worker pod computes on its CPU whatever it asked for. The pod's own args (with the
            // operator's --device cuda for a pod that requests GPUs) come first and a last --device cpu wins, as the
            // node's device would; `exec` keeps the worker the process that gets the kubelet's signals.
            Entrypoint = image =>
                image.Contains("platform-worker", StringComparison.Ordinal) ? ["sh", "-c", "exec dotnet \"$0\" \"$@\" --device cpu", Path.Combine(bin, "platform-worker.dll")]
                : image.Contains("platform-router", StringComparison.Ordinal) ? ["dotnet", Path.Combine(bin, "platform-router.dll")]
                : null,
            NodeEnvironment = new Dictionary<string, string> { ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1", ["DOTNET_gcServer"] = "0" },
        });
        var running = new RunningCluster(cluster, kubelet, modelsDir);
        // The operator reaches the router Service by its cluster DNS name, as it would in a pod.
        running.Operator = await OperatorInstance.StartAsync(cluster, "operator-0",
            services => services.ConfigureHttpClientDefaults(http => http.ConfigurePrimaryHttpMessageHandler(kubelet.Network.CreateHttpHandler)),
            ["--Operator:WorkerImage=ghcr.io/longcontext/platform-worker:latest", "--Operator:RouterImage=ghcr.io/longcontext/platform-router:latest", .. operatorArgs]);
        return running;
    }

    /// <summary>A tiny bf16 llama at pvc://models/tiny, the PVC content of the lifecycle and autoscaling tests.</summary>
    public static Dictionary<string, RandomModelOptions> TinyPvc(ulong seed) =>
        new() { ["tiny"] = new RandomModelOptions { Preset = "tiny", ModelType = "llama", Dtype = Platform.Core.Safetensors.SafetensorsDtype.BF16, Seed = seed } };

    /// <summary>A model on the tiny PVC model with the CRD's defaults for everything <paramref name="change"/> leaves alone.</summary>
    public static LongContextModel TinyModel(string ns, string name, int replicas, Action<LongContextModelSpec>? change = null)
    {
        var model = new LongContextModel
        {
            ApiVersion = LongContextModel.Group + "/" + LongContextModel.Version,
            Kind = "LongContextModel",
            Metadata = new k8s.Models.V1ObjectMeta { Name = name, NamespaceProperty = ns },
            Spec = new LongContextModelSpec
            {
                Model = new ModelSpec { Source = "pvc://models/tiny", ServedName = name, MaxContextTokens = 4096 },
                Replicas = replicas,
            },
        };
        change?.Invoke(model.Spec);
        return model;
    }

    /// <summary>An HTTP client that resolves cluster names (the router Service) like a pod would.</summary>
    public HttpClient Http(TimeSpan? timeout = null)
    {
        var client = new HttpClient(Kubelet.Network.CreateHttpHandler()) { Timeout = timeout ?? TimeSpan.FromMinutes(3) };
        _clients.Add(client);
        return client;
    }

    /// <summary>The official OpenAI client pointed at the model's router Service.</summary>
    public ChatClient Chat(string model, string servedName, string apiKey = "unused") =>
        new(servedName, new ApiKeyCredential(apiKey), new OpenAIClientOptions
        {
            Endpoint = new Uri(Names.Endpoint(model, Namespace) + "/v1"),
            Transport = new HttpClientPipelineTransport(Http()),
            NetworkTimeout = TimeSpan.FromMinutes(3),
        });

    /// <summary>Runs kubectl against the cluster (the real binary).</summary>
    public async Task<KubectlResult> KubectlAsync(params string[] args)
    {
        var cache = Path.Combine(Kubelet.Options.StateDirectory, "kubectl-cache");
        return await Kubectl.RunAsync(Cluster, cache, args);
    }

    /// <summary>Waits for the model's condition, with the kubelet's pod logs in the failure message.</summary>
    public async Task<LongContextModel> WaitForConditionAsync(string name, string type, string status, TimeSpan timeout)
    {
        try
        {
            return (await Waiter.ModelAsync(Client, Namespace, name, m => Models.HasCondition(m, type, status), timeout))!;
        }
        catch (Exception e) when (e is TimeoutException or Xunit.Sdk.XunitException)
        {
            throw new TimeoutException($"{e.Message}\nkubelet: {Kubelet.LastError}\npods: {string.Join(", ", Kubelet.Pods)}\n{Kubelet.Logs()}", e);
        }
    }

    /// <summary>Waits until a condition on the running pods holds; fails with the pod logs.</summary>
    public async Task WaitForPodsAsync(Func<IReadOnlyList<(string Name, string Ip, bool Ready, int Restarts, bool Terminating)>, bool> predicate, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!predicate(Kubelet.Pods))
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"{what} within {timeout}; pods: {string.Join(", ", Kubelet.Pods)}; kubelet: {Kubelet.LastError}\n{Kubelet.Logs()}");
            await Task.Delay(100);
        }
    }

    public JsonObject? Get(string group, string plural, string name) => Cluster.RequireFake.Get(group, plural, Namespace, name);

    public async ValueTask DisposeAsync()
    {
        foreach (var client in _clients) client.Dispose();
        await Operator.DisposeAsync();
        string state = Path.GetDirectoryName(Kubelet.Options.StateDirectory)!;
        await Kubelet.DisposeAsync();
        await Cluster.DisposeAsync();
        try { Directory.Delete(state, recursive: true); } catch (IOException) { /* best effort */ }
    }
}

/// <summary>A test over the test kubelet: needs kubectl and the fake API server (on a real cluster its own
/// kubelet runs the images, so these are skipped there with the reason).</summary>
public sealed class ClusterFactAttribute : FactAttribute
{
    public ClusterFactAttribute()
    {
        if (TestCluster.RealKubeconfig is not null)
            Skip = $"runs the operator's pods as local processes beside the fake API server; {TestCluster.KubeconfigVariable} points at a real cluster";
        else if (Kubectl.Path is null)
            Skip = "kubectl is not on PATH (./test.sh installs it: apt-get install kubernetes-client)";
    }
}
