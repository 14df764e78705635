// The real kubectl against the test cluster (the fake unless PLATFORM_TEST_KUBECONFIG is set),
// with a generated kubeconfig: apply the CRD and the sample, list with the printer columns
// (server-side Table), scale through the scale subresource, delete; with the operator running
// so the sample is reconciled in between. The fake serves no OpenAPI documents, so apply runs
// with --validate=false (the API server still validates on a real cluster).
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class KubectlTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;
    private string _cacheDir = null!;

    public async Task InitializeAsync()
    {
        _cluster = await TestCluster.StartAsync();
        _cacheDir = Directory.CreateTempSubdirectory("kubectl-cache-").FullName;
    }

    public async Task DisposeAsync()
    {
        await _cluster.DisposeAsync();
        Directory.Delete(_cacheDir, recursive: true);
    }

    [KubectlFact]
    public async Task Kubectl_applies_lists_scales_and_deletes_a_LongContextModel()
    {
        await using var op = await OperatorInstance.StartAsync(_cluster, "kubectl-op");

        var applyCrd = (await RunAsync("apply", "--validate=false", "-f", RepoPaths.Crd)).EnsureSuccess();
        Assert.Contains("customresourcedefinition.apiextensions.k8s.io/longcontextmodels.serving.longcontext.dev", applyCrd.Output, StringComparison.Ordinal);
        var applySample = (await RunAsync("apply", "--validate=false", "-f", RepoPaths.Sample)).EnsureSuccess();
        Assert.Contains("longcontextmodel.serving.longcontext.dev/qwen-1m created", applySample.Output, StringComparison.Ordinal);

        await Waiter.ModelAsync(_cluster.Client, _cluster.Namespace, "qwen-1m", m => m?.Status?.ObservedGeneration == 1);
        var table = (await RunAsync("get", "lcm")).EnsureSuccess().Output;
        var lines = table.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["NAME", "READY", "DESIRED", "MODEL", "CONTEXT", "POLICY", "AGE"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var row = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["qwen-1m", "0", "2", "qwen-1m", "1048576", "KvAware"], row[..6]);

        (await RunAsync("scale", "lcm/qwen-1m", "--replicas", "3")).EnsureSuccess();
        Assert.Equal("3", (await RunAsync("get", "lcm", "qwen-1m", "-o", "jsonpath={.spec.replicas}")).EnsureSuccess().Output.Trim());
        await Waiter.StatefulSetAsync(_cluster.Client, _cluster.Namespace, "qwen-1m-worker", s => s?.Spec.Replicas == 3);

        // Re-applying the unchanged sample is a no-op patch, not an error.
        (await RunAsync("apply", "--validate=false", "-f", RepoPaths.Sample)).EnsureSuccess();

        var delete = (await RunAsync("delete", "lcm", "qwen-1m", "--timeout=20s")).EnsureSuccess();
        Assert.Contains("deleted", delete.Output, StringComparison.Ordinal);
        await Waiter.StatefulSetAsync(_cluster.Client, _cluster.Namespace, "qwen-1m-worker", s => s is null);
        var after = await RunAsync("get", "lcm", "qwen-1m");
        Assert.NotEqual(0, after.ExitCode);
        Assert.Contains("NotFound", after.Error, StringComparison.Ordinal);
        Assert.Equal(LongContextModel.Plural, (await RunAsync("api-resources", "--api-group", LongContextModel.Group, "-o", "name")).EnsureSuccess().Output.Trim().Split('.')[0]);
    }

    private Task<KubectlResult> RunAsync(params string[] args) => Kubectl.RunAsync(_cluster, _cacheDir, args);
}
