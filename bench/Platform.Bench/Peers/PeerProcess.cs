// Runs a peer program (the llama.cpp driver, llama2.c's run, the platform CLI) to completion and
// returns its output and wall time, measured from just before the process starts.
using System.Diagnostics;

namespace Platform.Bench.Peers;

internal sealed record PeerRun(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    /// <summary>The value after <paramref name="key"/> on the first stdout or stderr line that starts with it.</summary>
    public string? Field(string key)
    {
        foreach (var line in (Stdout + "\n" + Stderr).Split('\n'))
        {
            if (line.StartsWith(key, StringComparison.Ordinal)) return line[key.Length..].Trim();
        }
        return null;
    }

    public PeerRun EnsureSuccess(string what) => ExitCode == 0
        ? this
        : throw new InvalidOperationException($"{what} exited with {ExitCode}: {Stderr.Trim()}");
}

internal static class PeerProcess
{
    public static async Task<PeerRun> RunAsync(string fileName, IEnumerable<string> arguments,
        IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var info = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in arguments) info.ArgumentList.Add(a);
        if (environment is not null)
            foreach (var (k, v) in environment) info.Environment[k] = v;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {fileName}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(20));
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{fileName} did not finish within {timeout ?? TimeSpan.FromMinutes(20)}");
        }
        var elapsed = clock.Elapsed;
        return new PeerRun(process.ExitCode, await stdout, await stderr, elapsed);
    }
}
