// A child process of `platform up`: started with its output captured, waited on
// for a marker line (e.g. the worker's PLATFORM_WORKER_LISTENING), stopped
// gently (SIGTERM, so it drains) and then firmly after a grace period. The last
// lines of its output are kept so a failed start can say why.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Platform.Cli;

internal sealed partial class ChildProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource<string>> _markers = new();

    public string Name { get; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;
    public Task Exited { get; }

    private ChildProcess(string name, Process process)
    {
        Name = name;
        _process = process;
        Exited = process.WaitForExitAsync();
    }

    public static ChildProcess Start(string name, string dll, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        if (!File.Exists(dll))
            throw new FileNotFoundException($"{dll} is missing; build the solution first (./platform builds what it needs).");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (environment is not null) foreach (var (k, v) in environment) psi.Environment[k] = v;
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {name}");
        var child = new ChildProcess(name, process);
        process.OutputDataReceived += (_, e) => child.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => child.OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        _tail.Enqueue(line);
        while (_tail.Count > 40) _tail.TryDequeue(out _);
        foreach (var (prefix, tcs) in _markers)
            if (line.StartsWith(prefix, StringComparison.Ordinal)) tcs.TrySetResult(line[prefix.Length..].Trim());
    }

    public string Tail => string.Join(Environment.NewLine, _tail);

    /// <summary>Waits for a line starting with <paramref name="prefix"/> and returns the rest of it.</summary>
    public async Task<string> WaitForLineAsync(string prefix, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var tcs = _markers.GetOrAdd(prefix, _ => new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously));
        foreach (var line in _tail)
            if (line.StartsWith(prefix, StringComparison.Ordinal)) tcs.TrySetResult(line[prefix.Length..].Trim());
        var done = await Task.WhenAny(tcs.Task, Exited, Task.Delay(timeout, cancellationToken)).ConfigureAwait(false);
        if (done == tcs.Task) return await tcs.Task.ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        string why = HasExited ? $"exited with code {_process.ExitCode}" : $"did not print '{prefix}' within {timeout.TotalSeconds:F0} s";
        throw new InvalidOperationException($"{Name} {why}. Its last output:{Environment.NewLine}{Tail}");
    }

    /// <summary>SIGTERM (the child drains), then a kill after <paramref name="grace"/>.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (HasExited) return;
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) _ = SendSignal(_process.Id, 15);
        else _process.Kill(entireProcessTree: true);
        if (await Task.WhenAny(Exited, Task.Delay(grace)).ConfigureAwait(false) != Exited)
        {
            _process.Kill(entireProcessTree: true);
            await Exited.ConfigureAwait(false);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int SendSignal(int pid, int signal);

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        _process.Dispose();
    }
}
