// The operator as a separate process, started the way its image's ENTRYPOINT starts it
// (`dotnet Platform.Operator.dll`, the build copied next to this test assembly) and configured
// only from outside: a kubeconfig file (KUBECONFIG) for the test cluster, the namespace, its
// identity and the images. Nothing else is set, so the lease timings are the shipped defaults
// (15 s lease, 10 s renew deadline, 2 s retry). KillAsync() is SIGKILL: the process gets no chance
// to release its lease. Its console log is kept for failure messages.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Platform.Core.Processes;

namespace Platform.Operator.Tests.Infrastructure;

public sealed class OperatorProcess : IAsyncDisposable
{
    private readonly ChildProcess _process;

    private OperatorProcess(ChildProcess process, string identity, Uri url)
    {
        _process = process;
        Identity = identity;
        Url = url;
    }

    public string Identity { get; }

    /// <summary>Where its /healthz, /readyz and /metrics answer.</summary>
    public Uri Url { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>The last lines of its console log.</summary>
    public string Log => _process.Tail;

    public static OperatorProcess Start(TestCluster cluster, string identity)
    {
        var url = new Uri($"http://127.0.0.1:{FreeLoopbackPort()}");
        string[] args =
        [
            "--urls=" + url,
            "--Logging:LogLevel:Default=" + (Environment.GetEnvironmentVariable("PLATFORM_TEST_LOGLEVEL") ?? "Information"),
            "--Operator:Identity=" + identity,
            "--Operator:WatchNamespace=" + cluster.Namespace,
            "--Operator:LeaseNamespace=" + cluster.Namespace,
            "--Operator:WorkerImage=registry.test/worker:1",
            "--Operator:RouterImage=registry.test/router:1",
        ];
        var environment = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            // Out of a cluster the operator reads the kubeconfig; empty service variables keep it from
            // taking the in-cluster path.
            ["KUBECONFIG"] = cluster.KubeconfigPath,
            ["KUBERNETES_SERVICE_HOST"] = "",
            ["KUBERNETES_SERVICE_PORT"] = "",
            ["DOTNET_gcServer"] = "0",
        };
        var process = ChildProcess.StartDotnet("operator " + identity, Path.Combine(AppContext.BaseDirectory, "Platform.Operator.dll"), args, environment, tailLines: 200);
        return new OperatorProcess(process, identity, url);
    }

    /// <summary>Waits until /readyz answers 200 (a standby at once; a leader after its first list).</summary>
    public async Task WaitReadyAsync(TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var waited = Stopwatch.StartNew();
        while (waited.Elapsed < timeout)
        {
            Assert.False(_process.HasExited, $"operator {Identity} exited ({_process.ExitCode}) before it was ready:\n{Log}");
            try
            {
                using var response = await http.GetAsync(new Uri(Url, "/readyz"));
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                // Not listening yet.
            }

            await Task.Delay(100);
        }

        Assert.Fail($"operator {Identity} was not ready after {timeout.TotalSeconds} s:\n{Log}");
    }

    /// <summary>SIGKILL, and waits until it is gone: no shutdown, no lease release, connections cut.</summary>
    public async Task KillAsync()
    {
        _process.Kill();
        await _process.Exited;
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();

    private static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
