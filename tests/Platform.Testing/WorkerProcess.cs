// Runs platform-worker as a real child process (`dotnet platform-worker.dll ...`,
// through the one process runner, Core's ChildProcess) for end-to-end tests and
// the bench's local clusters: reads the PLATFORM_WORKER_* lines to learn the
// bound addresses and readiness, keeps the tail of the output for error
// messages, and can stop the process gracefully (SIGTERM) or kill it (SIGKILL).
using System.Reflection;
using Platform.Core.Processes;
using Platform.Core.Workers;

namespace Platform.Testing;

public sealed class WorkerProcess : IAsyncDisposable
{
    private readonly ChildProcess _child;
    private Uri? _grpc;
    private Uri? _http;

    private WorkerProcess(ChildProcess child) => _child = child;

    public int Id => _child.Id;
    public Uri GrpcAddress => _grpc ?? throw new InvalidOperationException("the worker has not announced its address.");
    public Uri HttpAddress => _http ?? throw new InvalidOperationException("the worker has not announced its address.");
    /// <summary>The last lines the worker wrote (stdout and stderr), for diagnostics.</summary>
    public string OutputTail => _child.Tail;

    /// <summary>
    /// Starts `dotnet platform-worker.dll` with <paramref name="args"/> (add "--port 0 --http-port 0" for free ports)
    /// and waits until it has loaded its model (PLATFORM_WORKER_READY), or throws with its output if it exits first.
    /// </summary>
    /// <param name="workerDll">Path of platform-worker.dll; default: <see cref="LocateWorkerDll"/>.</param>
    public static async Task<WorkerProcess> StartAsync(IEnumerable<string> args, string? workerDll = null, TimeSpan? readyTimeout = null,
        CancellationToken cancellationToken = default)
    {
        var worker = new WorkerProcess(ChildProcess.StartDotnet("platform-worker", workerDll ?? LocateWorkerDll(), args, tailLines: 200));
        try
        {
            var timeout = readyTimeout ?? TimeSpan.FromMinutes(2);
            worker._grpc = new Uri(await worker._child.WaitForLineAsync(WorkerAnnouncements.Listening, timeout, cancellationToken));
            worker._http = new Uri(await worker._child.WaitForLineAsync(WorkerAnnouncements.HttpListening, timeout, cancellationToken));
            await worker._child.WaitForLineAsync(WorkerAnnouncements.Ready, timeout, cancellationToken);
            return worker;
        }
        catch
        {
            await worker.DisposeAsync();
            throw;
        }
    }

    /// <summary>Sends SIGTERM: the worker drains and exits. Await <see cref="WaitForExitAsync"/> for the exit code.</summary>
    public void Terminate() => _child.Terminate();

    /// <summary>SIGKILL, as a crash would end it.</summary>
    public void Kill() => _child.Kill();

    /// <summary>SIGSTOP: a frozen worker (connections stay open, nothing answers). <see cref="Thaw"/> resumes it.</summary>
    public void Freeze() => _child.Freeze();

    /// <summary>SIGCONT.</summary>
    public void Thaw() => _child.Thaw();

    public async Task<int> WaitForExitAsync(CancellationToken cancellationToken = default)
    {
        await _child.Exited.WaitAsync(cancellationToken);
        return _child.ExitCode!.Value;
    }

    /// <summary>Kills the process (no drain) and releases it.</summary>
    public async ValueTask DisposeAsync()
    {
        Kill();
        await _child.Exited.WaitAsync(TimeSpan.FromSeconds(10));
        await _child.DisposeAsync();
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
}
