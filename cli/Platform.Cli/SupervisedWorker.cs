// One worker of `platform up`, kept running the way a kubelet keeps a pod's container: when its
// process exits on its own it is started again with the same arguments (same gRPC port, so the
// router's health checks find it again and it rejoins the pool) after a backoff that doubles
// from 1 s up to 30 s and resets once a run has lasted a minute. Nothing else is touched: the
// router, the other workers and the embedded store keep serving. Stopping it (Ctrl-C, SIGTERM)
// drains the current process and starts no other.
using Platform.Core.Processes;

namespace Platform.Cli;

internal sealed class SupervisedWorker : IAsyncDisposable
{
    private static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan HealthyRun = TimeSpan.FromMinutes(1);
    private readonly string _dll;
    private readonly IReadOnlyList<string> _args;
    private readonly CancellationTokenSource _stop = new();
    private readonly Action<string> _log;
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "Disposed through Current (a volatile read of it) in DisposeAsync, and each replaced process in SuperviseAsync.")]
    private ChildProcess _current;
    private Task? _supervising;

    public SupervisedWorker(string name, string dll, IReadOnlyList<string> args, Action<string> log)
    {
        Name = name;
        _dll = dll;
        _args = args;
        _log = log;
        _current = ChildProcess.StartDotnet(name, dll, args);
    }

    public string Name { get; }

    /// <summary>The process running now (a new one after each restart).</summary>
    public ChildProcess Current => Volatile.Read(ref _current);

    /// <summary>How often the worker was started again after exiting.</summary>
    public int Restarts { get; private set; }

    /// <summary>Starts watching: from now on an exit means a restart.</summary>
    public void Supervise() => _supervising ??= Task.Run(SuperviseAsync);

    private async Task SuperviseAsync()
    {
        var backoff = FirstBackoff;
        var started = DateTime.UtcNow;
        while (!_stop.IsCancellationRequested)
        {
            var child = Current;
            await Task.WhenAny(child.Exited, Task.Delay(Timeout.Infinite, _stop.Token)).ConfigureAwait(false);
            if (_stop.IsCancellationRequested) return;
            if (DateTime.UtcNow - started > HealthyRun) backoff = FirstBackoff;
            _log($"{Name} exited ({child.ExitCode}); restarting it in {backoff.TotalSeconds:0} s. Its last output:{Environment.NewLine}{child.Tail}");
            try
            {
                await Task.Delay(backoff, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            await child.DisposeAsync().ConfigureAwait(false);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
            started = DateTime.UtcNow;
            Volatile.Write(ref _current, ChildProcess.StartDotnet(Name, _dll, _args));
            Restarts++;
        }
    }

    /// <summary>Stops supervising and drains the current process (SIGTERM, then a kill after the grace).</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_supervising is not null) await _supervising.ConfigureAwait(false);
        await Current.StopAsync(grace).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        await Current.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
