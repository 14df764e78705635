// Runs the real kubectl binary against a test cluster with its kubeconfig, a private discovery
// cache directory, and a timeout so a hung kubectl fails the test instead of hanging it.
using System.Diagnostics;

namespace Platform.Operator.Tests.Infrastructure;

public sealed record KubectlResult(int ExitCode, string Output, string Error)
{
    public KubectlResult EnsureSuccess()
    {
        Assert.True(ExitCode == 0, $"kubectl failed ({ExitCode}): {Error}\n{Output}");
        return this;
    }
}

public static class Kubectl
{
    public static string? Path { get; } = Environment.GetEnvironmentVariable("PATH")?
        .Split(System.IO.Path.PathSeparator)
        .Select(dir => System.IO.Path.Combine(dir, "kubectl"))
        .FirstOrDefault(File.Exists);

    public static async Task<KubectlResult> RunAsync(TestCluster cluster, string cacheDir, params string[] args)
    {
        var info = new ProcessStartInfo(Path ?? throw new InvalidOperationException("kubectl not found"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "--kubeconfig", cluster.KubeconfigPath, "--cache-dir", cacheDir, "--namespace", cluster.Namespace, "--request-timeout", "20s" }.Concat(args))
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("kubectl " + string.Join(' ', args) + " did not finish in 30 s");
        }

        return new KubectlResult(process.ExitCode, await stdout, await stderr);
    }
}
