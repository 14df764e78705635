// The cluster a test runs against: by default an in-process FakeApiServer with a generated
// kubeconfig; when PLATFORM_TEST_KUBECONFIG names a kubeconfig, the real cluster it points at
// (each test then works in its own fresh namespace, deleted afterwards). Either way the CRD
// from crds/longcontextmodels.yaml is installed through the API before the test starts.
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Platform.Testing.Kubernetes;

namespace Platform.Operator.Tests.Infrastructure;

public sealed class TestCluster : IAsyncDisposable
{
    public const string KubeconfigVariable = "PLATFORM_TEST_KUBECONFIG";
    private readonly List<Kubernetes> _clients = [];

    private TestCluster(FakeApiServer? fake, string kubeconfigPath, string ns)
    {
        Fake = fake;
        KubeconfigPath = kubeconfigPath;
        Namespace = ns;
        Client = NewClient();
    }

    public static string? RealKubeconfig => Environment.GetEnvironmentVariable(KubeconfigVariable) is { Length: > 0 } path ? path : null;

    /// <summary>The fake server, or null against a real cluster.</summary>
    public FakeApiServer? Fake { get; }

    public FakeApiServer RequireFake => Fake ?? throw new InvalidOperationException("this test needs the fake API server");

    public string KubeconfigPath { get; }

    public string Namespace { get; }

    public IKubernetes Client { get; }

    /// <param name="tls">The fake serves HTTPS with its own CA (what pods of the test kubelet need for
    /// the in-cluster configuration).</param>
    public static async Task<TestCluster> StartAsync(bool tls = false)
    {
        TestCluster cluster;
        if (RealKubeconfig is { } path)
        {
            cluster = new TestCluster(null, path, "platform-test-" + Guid.NewGuid().ToString("N")[..8]);
        }
        else
        {
            var fake = await FakeApiServer.StartAsync(tls: tls).ConfigureAwait(false);
            var kubeconfig = await fake.WriteKubeconfigAsync("platform-fake-", "tester", "default").ConfigureAwait(false);
            cluster = new TestCluster(fake, kubeconfig, "test");
        }

        await cluster.Client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = cluster.Namespace } }).ConfigureAwait(false);
        await cluster.InstallCrdAsync().ConfigureAwait(false);
        return cluster;
    }

    /// <summary>A separate client (own connections), e.g. for a second operator replica.</summary>
    public Kubernetes NewClient()
    {
        var config = Fake is null || Fake.Certificate is not null
            ? KubernetesClientConfiguration.BuildConfigFromConfigFile(KubeconfigPath)
            : new KubernetesClientConfiguration { Host = Fake.Url, AccessToken = "fake-token" };
        var client = new Kubernetes(config);
        _clients.Add(client);
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        if (Fake is null)
        {
            await DeleteNamespaceAsync().ConfigureAwait(false);
        }
        else
        {
            await Fake.DisposeAsync().ConfigureAwait(false);
            File.Delete(KubeconfigPath);
        }

        foreach (var client in _clients)
        {
            client.Dispose();
        }
    }

    /// <summary>Deletes the test namespace on a real cluster; false when it was already gone.</summary>
    private async Task<bool> DeleteNamespaceAsync()
    {
        try
        {
            await Client.CoreV1.DeleteNamespaceAsync(Namespace).ConfigureAwait(false);
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return false;
        }
    }

    private async Task InstallCrdAsync()
    {
        var crd = KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(RepoPaths.Crd).ConfigureAwait(false));
        try
        {
            await Client.ApiextensionsV1.CreateCustomResourceDefinitionAsync(crd).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            var existing = await Client.ApiextensionsV1.ReadCustomResourceDefinitionAsync(crd.Metadata.Name).ConfigureAwait(false);
            crd.Metadata.ResourceVersion = existing.Metadata.ResourceVersion;
            await Client.ApiextensionsV1.ReplaceCustomResourceDefinitionAsync(crd, crd.Metadata.Name).ConfigureAwait(false);
        }
    }
}

/// <summary>A test that needs the fake's hooks (injected faults, playing the kubelet); skipped on a real cluster.</summary>
public sealed class FakeOnlyFactAttribute : FactAttribute
{
    public FakeOnlyFactAttribute()
    {
        if (TestCluster.RealKubeconfig is not null)
        {
            Skip = $"needs the fake API server's test hooks; {TestCluster.KubeconfigVariable} points at a real cluster";
        }
    }
}

/// <summary>A test that drives the kubectl binary; skipped when it is not installed.</summary>
public sealed class KubectlFactAttribute : FactAttribute
{
    public KubectlFactAttribute()
    {
        if (Kubectl.Path is null)
        {
            Skip = "kubectl is not on PATH (apt-get install kubernetes-client)";
        }
    }
}

public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Crd => System.IO.Path.Combine(Root, "crds", "longcontextmodels.yaml");

    public static string Sample => System.IO.Path.Combine(Root, "crds", "samples", "qwen-1m.yaml");

    public static string Chart => System.IO.Path.Combine(Root, "charts", "platform");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Platform.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Platform.sln not found above " + AppContext.BaseDirectory);
    }
}
