// A child process with its output captured: started (any executable, or
// `dotnet some.dll`), waited on for a marker line (e.g. the worker's
// PLATFORM_WORKER_LISTENING), stopped gently (SIGTERM, so it drains) and then
// firmly after a grace period, or killed outright (SIGKILL, as a crash). The
// last lines of its output are kept so a failed start can say why. The one
// process runner: `platform up`, the bench and the tests' WorkerProcess and
// RouterProcess all start their children through it.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Platform.Core.Processes;

public sealed partial class ChildProcess : IAsyncDisposable
{
    private const int SigTerm = 15;
    private const int SigStop = 19;   // Linux x86-64 and arm64
    private const int SigCont = 18;
    private readonly Process _process;
    private readonly int _tailLines;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource<string>> _markers = new();

    public string Name { get; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;
    /// <summary>Completes when the process has exited and both output streams are read to their end.</summary>
    public Task Exited { get; }

    private ChildProcess(string name, Process process, int tailLines)
    {
        Name = name;
        _process = process;
        _tailLines = tailLines;
        Exited = process.WaitForExitAsync();
    }

    /// <summary>Starts `dotnet <paramref name="dll"/> <paramref name="args"/>`.</summary>
    public static ChildProcess StartDotnet(string name, string dll, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null,
        int tailLines = 40)
    {
        if (!File.Exists(dll))
            throw new FileNotFoundException($"{dll} is missing; build the solution first (./platform builds what it needs).", dll);
        var env = new Dictionary<string, string>(environment ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
        };
        return Start(name, "dotnet", [dll, .. args], env, tailLines);
    }

    /// <summary>Starts <paramref name="fileName"/> with <paramref name="args"/>, its stdout and stderr captured.</summary>
    public static ChildProcess Start(string name, string fileName, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null,
        int tailLines = 40)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentOutOfRangeException.ThrowIfLessThan(tailLines, 1);
        var psi = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (environment is not null) foreach (var (k, v) in environment) psi.Environment[k] = v;
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {name} ({fileName})");
        var child = new ChildProcess(name, process, tailLines);
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
        while (_tail.Count > _tailLines) _tail.TryDequeue(out _);
        foreach (var (prefix, tcs) in _markers)
            if (line.StartsWith(prefix, StringComparison.Ordinal)) tcs.TrySetResult(line[prefix.Length..].Trim());
    }

    /// <summary>The last lines it wrote (stdout and stderr), for error messages.</summary>
    public string Tail => string.Join(Environment.NewLine, _tail);

    /// <summary>Waits for a line starting with <paramref name="prefix"/> and returns the rest of it; throws with the
    /// output's tail if the process exits first or the time runs out.</summary>
    public async Task<string> WaitForLineAsync(string prefix, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var tcs = _markers.GetOrAdd(prefix, _ => new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously));
        foreach (var line in _tail)
            if (line.StartsWith(prefix, StringComparison.Ordinal)) tcs.TrySetResult(line[prefix.Length..].Trim());
        var done = await Task.WhenAny(tcs.Task, Exited, Task.Delay(timeout, cancellationToken)).ConfigureAwait(false);
        if (done == tcs.Task) return await tcs.Task.ConfigureAwait(false);
        if (tcs.Task.IsCompleted) return await tcs.Task.ConfigureAwait(false); // the marker and the exit raced
        cancellationToken.ThrowIfCancellationRequested();
        string why = HasExited ? $"exited (code {_process.ExitCode}) before it printed '{prefix.Trim()}'" : $"did not print '{prefix.Trim()}' within {timeout.TotalSeconds:F0} s";
        throw new InvalidOperationException($"{Name} {why}. Its last output:{Environment.NewLine}{Tail}");
    }

    /// <summary>Sends SIGTERM (the child drains and exits); <see cref="Exited"/> tells when.</summary>
    public void Terminate()
    {
        if (HasExited) return;
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            if (SendSignal(_process.Id, SigTerm) != 0 && !HasExited)
                throw new InvalidOperationException($"kill(SIGTERM) failed for {Name} (process {_process.Id}): errno {Marshal.GetLastPInvokeError()}");
        }
        else _process.Kill(entireProcessTree: true);
    }

    /// <summary>SIGKILL, as a crash would end it.</summary>
    public void Kill()
    {
        if (!HasExited) _process.Kill(entireProcessTree: true);
    }

    /// <summary>SIGSTOP: the process freezes (a hung machine, a stuck GC) without closing a socket; <see cref="Thaw"/> resumes it. Linux only.</summary>
    public void Freeze() => Signal(SigStop, "SIGSTOP");

    /// <summary>SIGCONT: a frozen process runs again.</summary>
    public void Thaw() => Signal(SigCont, "SIGCONT");

    private void Signal(int signal, string name)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException($"{name} is sent on Linux only.");
        if (!HasExited && SendSignal(_process.Id, signal) != 0 && !HasExited)
            throw new InvalidOperationException($"kill({name}) failed for {Name} (process {_process.Id}): errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>SIGTERM (the child drains), then a kill after <paramref name="grace"/>.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (HasExited)
        {
            await Exited.ConfigureAwait(false);
            return;
        }
        Terminate();
        if (await Task.WhenAny(Exited, Task.Delay(grace)).ConfigureAwait(false) != Exited)
        {
            Kill();
            await Exited.ConfigureAwait(false);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SendSignal(int pid, int signal);

    /// <summary>Stops it gently (<see cref="StopAsync"/> with 5 s of grace) and releases it.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        _process.Dispose();
    }
}
