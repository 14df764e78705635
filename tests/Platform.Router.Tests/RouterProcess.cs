// Runs platform-router as a real child process and learns its address from the
// PLATFORM_ROUTER_LISTENING line, as the end-to-end tests and `platform up` do.
using System.Collections.Concurrent;
using System.Diagnostics;

namespace Platform.Router.Tests;

internal sealed class RouterProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly TaskCompletionSource<Uri> _address = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private RouterProcess(Process process) => _process = process;

    public Uri Address => _address.Task.Result;
    public string OutputTail => string.Join('\n', _tail);

    public static async Task<RouterProcess> StartAsync(IEnumerable<string> args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "platform-router.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var router = new RouterProcess(process);
        process.OutputDataReceived += (_, e) => router.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => router.OnLine(e.Data);
        process.Exited += (_, _) => router._address.TrySetException(new InvalidOperationException($"platform-router exited (code {process.ExitCode}):\n{router.OutputTail}"));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        await router._address.Task.WaitAsync(TimeSpan.FromSeconds(60));
        return router;
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        _tail.Enqueue(line);
        while (_tail.Count > 200) _tail.TryDequeue(out _);
        if (line.StartsWith(RouterApp.ListeningPrefix, StringComparison.Ordinal))
            _address.TrySetResult(new Uri(line[RouterApp.ListeningPrefix.Length..].Trim()));
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
