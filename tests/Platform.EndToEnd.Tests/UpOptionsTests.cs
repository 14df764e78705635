// `platform up` refuses bad KV tier options before starting anything, with exit
// code 2 and a message naming the switch.
using System.Diagnostics;

namespace Platform.EndToEnd.Tests;

public sealed class UpOptionsTests
{
    private static async Task<(int Code, string Err)> Up(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "platform.dll"));
        psi.ArgumentList.Add("up");
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = await p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(cts.Token);
        await stdout;
        return (p.ExitCode, err);
    }

    [Theory]
    [InlineData("--kv-tier|cloud", "--kv-tier must be off, host or remote")]
    [InlineData("--kv-host-memory|lots", "--kv-host-memory 'lots' is not a size")]
    [InlineData("--redis|localhost", "--redis 'localhost' is not HOST:PORT")]
    [InlineData("--kv-tier|host|--redis|127.0.0.1:6379", "--redis is only used with --kv-tier remote")]
    [InlineData("--worker-memory|lots", "--worker-memory 'lots' must be a size")]
    [InlineData("--worker-memory|512MB|--kv-host-memory|1GiB", "larger than --kv-host-memory")]
    [InlineData("--workers|1000", "not enough free memory for 1000 worker(s)")]
    public async Task Bad_kv_tier_options_exit_with_code_2(string args, string message)
    {
        var (code, err) = await Up(args.Split('|'));
        Assert.Equal(2, code);
        Assert.Contains(message, err, StringComparison.Ordinal);
    }
}
