// One container of a pod as a local process, the way a container runtime would start it: the
// image's entrypoint (or the container's command) with the container's args exactly as written,
// $(VAR) references expanded from its environment as the kubelet does, in a private mount and
// UTS namespace (unshare) where the pod's volumes are bind-mounted at their mount paths, the
// cluster's hosts file at /etc/hosts and the pod's name as hostname. Output goes to a log file
// per container. Probes (startup, readiness, liveness; httpGet and tcpSocket) run at the pod's
// thresholds; an exit is restarted with backoff (restartPolicy Always, the only policy the
// workloads here use). An init container (runToCompletion) is done once it exits 0; a failed
// run is retried with the same backoff, as a node does for a pod with restartPolicy Always.
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes.Kubelet;

internal sealed record BindMount(string Source, string Target, bool ReadOnly);

internal sealed partial class ContainerProcess : IAsyncDisposable
{
    private readonly JsonObject _spec;
    private readonly string[] _argv;
    private readonly IReadOnlyDictionary<string, string> _env;
    private readonly IReadOnlyList<BindMount> _mounts;
    private readonly string _podName;
    private readonly string _podIp;
    private readonly string _hostsFile;
    private readonly string _scriptPath;
    private readonly TestKubeletOptions _options;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly bool _runToCompletion;
    private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _supervisor;
    private Process? _process;
    private volatile bool _terminating;

    public ContainerProcess(JsonObject spec, string[] argv, IReadOnlyDictionary<string, string> env, IReadOnlyList<BindMount> mounts,
        string podName, string podIp, string hostsFile, string stateDirectory, TestKubeletOptions options, bool runToCompletion = false)
    {
        _runToCompletion = runToCompletion;
        _spec = spec;
        _argv = argv;
        _env = env;
        _mounts = mounts;
        _podName = podName;
        _podIp = podIp;
        _hostsFile = hostsFile;
        _options = options;
        Name = JsonTools.Str(spec, "name") ?? "main";
        LogPath = Path.Combine(stateDirectory, Name + ".log");
        _scriptPath = Path.Combine(stateDirectory, Name + ".start.sh");
    }

    public string Name { get; }

    public string LogPath { get; }

    public int RestartCount { get; private set; }

    public bool Running { get; private set; }

    public bool Ready { get; private set; }

    public bool Started { get; private set; }

    public int? LastExitCode { get; private set; }

    /// <summary>Waiting out the restart backoff after a failed run (CrashLoopBackOff on a node).</summary>
    public bool BackingOff { get; private set; }

    /// <summary>An init container that exited 0: done for good.</summary>
    public bool Completed => _completed.Task.IsCompleted;

    /// <summary>Completes when an init container exits 0 (never for a main container).</summary>
    public Task Completion => _completed.Task;

    public int? Pid
    {
        get
        {
            lock (_lock) return _process is { HasExited: false } p ? p.Id : null;
        }
    }

    public void Start()
    {
        WriteStartScript();
        _supervisor = Task.Run(SuperviseAsync);
    }

    /// <summary>Reads the container's log so far.</summary>
    public string Log()
    {
        try
        {
            using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return "";
        }
    }

    /// <summary>Sends a signal to the running process (a test killing a container).</summary>
    public bool Signal(int signal)
    {
        var pid = Pid;
        return pid is not null && Kill(pid.Value, signal) == 0;
    }

    /// <summary>SIGTERM, then SIGKILL after the grace period; no restart afterwards.</summary>
    public async Task TerminateAsync(TimeSpan grace)
    {
        _terminating = true;
        Process? process;
        lock (_lock) process = _process;
        if (process is { HasExited: false })
        {
            _ = Kill(process.Id, 15);
            using var timeout = new CancellationTokenSource(grace);
            try
            {
                await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _ = Kill(process.Id, 9);
                await process.WaitForExitAsync().ConfigureAwait(false);
            }
        }
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_supervisor is not null) await _supervisor.ConfigureAwait(false);
    }

    private async Task SuperviseAsync()
    {
        var backoff = _options.RestartBackoff;
        while (!_stop.IsCancellationRequested && !_terminating)
        {
            Process process;
            try
            {
                process = Launch();
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                await AppendLogAsync($"[test-kubelet] cannot start {string.Join(' ', _argv)}: {e.Message}").ConfigureAwait(false);
                await DelayAsync(backoff).ConfigureAwait(false);
                continue;
            }
            Process? previous;
            lock (_lock) (previous, _process) = (_process, process);
            previous?.Dispose();
            BackingOff = false;
            Running = true;
            Started = false;
            Ready = false;
            using var probing = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            var probes = ProbeAsync(process, probing.Token);
            await process.WaitForExitAsync().ConfigureAwait(false);
            await probing.CancelAsync().ConfigureAwait(false);
            await probes.ConfigureAwait(false);
            Running = false;
            Ready = false;
            LastExitCode = process.ExitCode;
            if (_runToCompletion && process.ExitCode == 0)
            {
                _completed.TrySetResult();
                break;
            }
            if (_terminating || _stop.IsCancellationRequested) break;
            await AppendLogAsync($"[test-kubelet] container {Name} exited with code {process.ExitCode}; restarting in {backoff.TotalMilliseconds:0} ms").ConfigureAwait(false);
            RestartCount++;
            BackingOff = true;
            await DelayAsync(backoff).ConfigureAwait(false);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, _options.RestartBackoff.Ticks * 10));
        }
    }

    private async Task DelayAsync(TimeSpan delay)
    {
        try { await Task.Delay(delay, _stop.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { /* stopping */ }
    }

    private Process Launch()
    {
        var psi = new ProcessStartInfo("unshare") { UseShellExecute = false };
        foreach (var a in new[] { "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", _scriptPath }) psi.ArgumentList.Add(a);
        foreach (var a in _argv) psi.ArgumentList.Add(a);
        psi.Environment.Clear();
        foreach (var (k, v) in _env) psi.Environment[k] = v;
        return Process.Start(psi) ?? throw new InvalidOperationException("unshare did not start");
    }

    private void WriteStartScript()
    {
        static string Q(string s) => "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
        var script = new StringBuilder("set -e\n");
        script.Append("hostname ").Append(Q(_podName)).Append('\n');
        script.Append("mount --bind ").Append(Q(_hostsFile)).Append(" /etc/hosts\n");
        foreach (var m in _mounts.OrderBy(m => m.Target.Length))
        {
            bool isFile = File.Exists(m.Source);
            script.Append(isFile ? "[ -e " + Q(m.Target) + " ] || { mkdir -p \"$(dirname " + Q(m.Target) + ")\"; touch " + Q(m.Target) + "; }\n" : "mkdir -p " + Q(m.Target) + "\n");
            script.Append("mount --bind ").Append(Q(m.Source)).Append(' ').Append(Q(m.Target)).Append('\n');
            if (m.ReadOnly) script.Append("mount -o remount,bind,ro ").Append(Q(m.Target)).Append('\n');
        }
        if (JsonTools.Str(_spec, "workingDir") is { Length: > 0 } dir) script.Append("cd ").Append(Q(dir)).Append('\n');
        script.Append("exec \"$@\" >>").Append(Q(LogPath)).Append(" 2>&1\n");
        File.WriteAllText(_scriptPath, script.ToString());
    }

    private async Task AppendLogAsync(string line)
    {
        try { await File.AppendAllTextAsync(LogPath, line + "\n").ConfigureAwait(false); }
        catch (IOException) { /* best effort */ }
    }

    /// <summary>Startup probe until it succeeds, then readiness and liveness, each at its own period.</summary>
    private async Task ProbeAsync(Process process, CancellationToken ct)
    {
        var startup = _spec["startupProbe"] as JsonObject;
        var readiness = _spec["readinessProbe"] as JsonObject;
        var liveness = _spec["livenessProbe"] as JsonObject;
        try
        {
            if (startup is not null)
            {
                // Probed often, but given the pod's whole budget (failureThreshold × periodSeconds) before a kill.
                var deadline = DateTime.UtcNow + InitialDelay(startup, capped: false) + FailureBudget(startup);
                await Task.Delay(InitialDelay(startup), ct).ConfigureAwait(false);
                while (!await CheckAsync(startup, ct).ConfigureAwait(false))
                {
                    if (DateTime.UtcNow >= deadline)
                    {
                        await AppendLogAsync($"[test-kubelet] startup probe failed for {FailureBudget(startup).TotalSeconds:0} s; killing {Name}").ConfigureAwait(false);
                        _ = Kill(process.Id, 9);
                        return;
                    }
                    await Task.Delay(Period(startup), ct).ConfigureAwait(false);
                }
            }
            Started = true;
            if (readiness is null) Ready = true;
            int readyFailures = 0, readySuccesses = 0;
            DateTime? failingSince = null;
            var nextReady = readiness is null ? DateTime.MaxValue : DateTime.UtcNow + (startup is null ? InitialDelay(readiness) : TimeSpan.Zero);
            var nextLive = liveness is null ? DateTime.MaxValue : DateTime.UtcNow + (startup is null ? InitialDelay(liveness, capped: false) : TimeSpan.Zero) + Period(liveness);
            while (!ct.IsCancellationRequested)
            {
                var now = DateTime.UtcNow;
                if (readiness is not null && now >= nextReady)
                {
                    if (await CheckAsync(readiness, ct).ConfigureAwait(false))
                    {
                        readyFailures = 0;
                        if (++readySuccesses >= Threshold(readiness, "successThreshold", 1)) Ready = true;
                    }
                    else
                    {
                        readySuccesses = 0;
                        if (++readyFailures >= Threshold(readiness, "failureThreshold", 3)) Ready = false;
                    }
                    nextReady = DateTime.UtcNow + Period(readiness);
                }
                if (liveness is not null && now >= nextLive)
                {
                    if (await CheckAsync(liveness, ct).ConfigureAwait(false)) failingSince = null;
                    else if ((failingSince ??= DateTime.UtcNow) + FailureBudget(liveness) <= DateTime.UtcNow)
                    {
                        // As on a node: failing for failureThreshold periods in a row (the pod's own periods).
                        await AppendLogAsync($"[test-kubelet] liveness probe failing for {FailureBudget(liveness).TotalSeconds:0} s; killing {Name}").ConfigureAwait(false);
                        _ = Kill(process.Id, 15);
                        return;
                    }
                    nextLive = DateTime.UtcNow + Period(liveness);
                }
                var wait = new[] { nextReady, nextLive }.Min() - DateTime.UtcNow;
                await Task.Delay(wait < TimeSpan.FromMilliseconds(20) ? TimeSpan.FromMilliseconds(20) : wait > TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : wait, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The process exited or the pod is going away.
        }
    }

    private TimeSpan Period(JsonObject probe)
    {
        var period = TimeSpan.FromSeconds(Threshold(probe, "periodSeconds", 10));
        return period < _options.MaxProbePeriod ? period : _options.MaxProbePeriod;
    }

    private TimeSpan InitialDelay(JsonObject probe, bool capped = true)
    {
        var delay = TimeSpan.FromSeconds(Threshold(probe, "initialDelaySeconds", 0));
        return !capped || delay < _options.MaxProbePeriod ? delay : _options.MaxProbePeriod;
    }

    /// <summary>How long a probe may fail before the container is killed: the pod's own failureThreshold × periodSeconds.</summary>
    private static TimeSpan FailureBudget(JsonObject probe) =>
        TimeSpan.FromSeconds(Threshold(probe, "failureThreshold", 3) * Threshold(probe, "periodSeconds", 10));

    private static int Threshold(JsonObject probe, string field, int fallback) => probe[field] is { } v ? (int)JsonTools.Long(v) : fallback;

    private async Task<bool> CheckAsync(JsonObject probe, CancellationToken ct)
    {
        var timeout = TimeSpan.FromSeconds(Threshold(probe, "timeoutSeconds", 1));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            if (probe["httpGet"] is JsonObject http)
            {
                int port = ResolvePort(http["port"]);
                string scheme = (JsonTools.Str(http, "scheme") ?? "HTTP").ToLowerInvariant();
                string host = JsonTools.Str(http, "host") is { Length: > 0 } h ? h : _podIp;
                using var client = new HttpClient();
                using var response = await client.GetAsync(new Uri($"{scheme}://{host}:{port}{JsonTools.Str(http, "path") ?? "/"}"), cts.Token).ConfigureAwait(false);
                return (int)response.StatusCode is >= 200 and < 400;
            }
            if (probe["tcpSocket"] is JsonObject tcp)
            {
                using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(_podIp, ResolvePort(tcp["port"]), cts.Token).ConfigureAwait(false);
                return true;
            }
            // exec and grpc probes are not implemented here: say so in the log and count it as passing.
            await AppendLogAsync("[test-kubelet] probe kind not supported by the test kubelet; treated as passing").ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is HttpRequestException or SocketException or OperationCanceledException or IOException)
        {
            ct.ThrowIfCancellationRequested();
            return false;
        }
    }

    /// <summary>A probe or Service port: a number, or the name of one of the container's ports.</summary>
    public int ResolvePort(JsonNode? port)
    {
        if (port is JsonValue v && v.TryGetValue<int>(out var n)) return n;
        if (port is JsonValue s && s.TryGetValue<string>(out var name))
        {
            if (int.TryParse(name, out n)) return n;
            foreach (var p in _spec["ports"] as JsonArray ?? [])
                if (JsonTools.Str(p, "name") == name) return (int)JsonTools.Long(p!["containerPort"]);
        }
        throw new InvalidOperationException($"container {Name} has no port {port?.ToJsonString()}");
    }

    public async ValueTask DisposeAsync()
    {
        await TerminateAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        _stop.Dispose();
        lock (_lock) _process?.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
