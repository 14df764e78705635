// Runs platform-worker as a real child process (`dotnet platform-worker.dll ...`)
// for end-to-end tests and local clusters: reads the PLATFORM_WORKER_* lines to
// learn the bound addresses and readiness, keeps the tail of the output for error
// messages, and can stop the process gracefully (SIGTERM) or kill it (SIGKILL).
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Platform.Worker;

public sealed partial class WorkerProcess : IAsyncDisposable
{
    public const string ListeningPrefix = "PLATFORM_WORKER_LISTENING ";
    public const string HttpListeningPrefix = "PLATFORM_WORKER_HTTP_LISTENING ";
    public const string ReadyLine = "PLATFORM_WORKER_READY";

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly TaskCompletionSource<Uri> _grpc = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<Uri> _http = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private WorkerProcess(Process process)
    {
        _process = process;
    }

    public Process Process => _process;
    public int Id => _process.Id;
    public Uri GrpcAddress => _grpc.Task.IsCompletedSuccessfully ? _grpc.Task.Result : throw new InvalidOperationException("the worker has not announced its address.");
    public Uri HttpAddress => _http.Task.IsCompletedSuccessfully ? _http.Task.Result : throw new InvalidOperationException("the worker has not announced its address.");
    /// <summary>The last lines the worker wrote (stdout and stderr), for diagnostics.</summary>
    public string OutputTail => string.Join('\n', _tail);

    /// <summary>
    /// Starts `dotnet platform-worker.dll` with <paramref name="args"/> (add "--port 0 --http-port 0" for free ports)
    /// and waits until it has loaded its model (PLATFORM_WORKER_READY), or throws with its output if it exits first.
    /// </summary>
    /// <param name="workerDll">Path of platform-worker.dll; default: <see cref="LocateWorkerDll"/>.</param>
    public static async Task<WorkerProcess> StartAsync(IEnumerable<string> args, string? workerDll = null, TimeSpan? readyTimeout = null,
        CancellationToken cancellationToken = default)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(workerDll ?? LocateWorkerDll());
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var worker = new WorkerProcess(process);
        process.OutputDataReceived += (_, e) => worker.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => worker.OnLine(e.Data);
        process.Exited += (_, _) => _ = worker.OnExitedAsync();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await worker._ready.Task.WaitAsync(readyTimeout ?? TimeSpan.FromMinutes(2), cancellationToken);
            await worker._grpc.Task.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            return worker;
        }
        catch
        {
            await worker.DisposeAsync();
            throw;
        }
    }

    private void OnLine(string? line)
    {
        if (line is null) return;
        _tail.Enqueue(line);
        while (_tail.Count > 200) _tail.TryDequeue(out _);
        if (line.StartsWith(ListeningPrefix, StringComparison.Ordinal)) _grpc.TrySetResult(new Uri(line[ListeningPrefix.Length..].Trim()));
        else if (line.StartsWith(HttpListeningPrefix, StringComparison.Ordinal)) _http.TrySetResult(new Uri(line[HttpListeningPrefix.Length..].Trim()));
        else if (line.Trim() == ReadyLine) _ready.TrySetResult();
    }

    private async Task OnExitedAsync()
    {
        // Exited can fire before the last output lines are read; WaitForExitAsync also waits for the end of both streams.
        await _process.WaitForExitAsync();
        var error = new InvalidOperationException($"platform-worker exited (code {_process.ExitCode}) before it was ready; its output:\n{OutputTail}");
        _ready.TrySetException(error);
        _grpc.TrySetException(error);
        _http.TrySetException(error);
    }

    /// <summary>Sends SIGTERM: the worker drains and exits. Await <see cref="WaitForExitAsync"/> for the exit code.</summary>
    public void Terminate()
    {
        if (_process.HasExited) return;
        if (SendSignal(_process.Id, 15) != 0) throw new InvalidOperationException($"kill(SIGTERM) failed for process {_process.Id}: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>SIGKILL, as a crash would end it.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
    }

    public async Task<int> WaitForExitAsync(CancellationToken cancellationToken = default)
    {
        await _process.WaitForExitAsync(cancellationToken);
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            Kill();
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            _process.Dispose();
        }
    }

    /// <summary>
    /// Finds platform-worker.dll: $PLATFORM_WORKER_DLL; next to the calling assembly when it was copied there
    /// with its runtimeconfig (a project reference to Platform.Worker does that); else the worker project's own
    /// build output (worker/Platform.Worker/bin/CONFIG/net10.0/linux-x64) found by walking up from the base directory.
    /// </summary>
    public static string LocateWorkerDll()
    {
        if (Environment.GetEnvironmentVariable("PLATFORM_WORKER_DLL") is { Length: > 0 } fromEnv)
            return File.Exists(fromEnv) ? fromEnv : throw new FileNotFoundException($"PLATFORM_WORKER_DLL points at '{fromEnv}', which does not exist.");
        string beside = Path.Combine(AppContext.BaseDirectory, "platform-worker.dll");
        if (File.Exists(beside) && File.Exists(Path.Combine(AppContext.BaseDirectory, "platform-worker.runtimeconfig.json"))) return beside;

        string configuration = typeof(WorkerProcess).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "worker", "Platform.Worker", "bin", configuration, "net10.0", "linux-x64", "platform-worker.dll");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException(
            "platform-worker.dll not found: build worker/Platform.Worker (dotnet build worker/Platform.Worker), reference it from the test project, or set PLATFORM_WORKER_DLL.");
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SendSignal(int pid, int signal);
}
