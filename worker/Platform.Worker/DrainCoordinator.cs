// Graceful shutdown. On SIGTERM (ApplicationStopping) the worker starts
// draining: readiness turns false, new Generate calls are refused with
// Unavailable, and StoppingAsync (which runs before any hosted service stops,
// so Kestrel keeps serving health and the in-flight streams) waits for the
// in-flight requests up to the grace period. What is still running then is
// aborted through HardStop; KV event streams end through StreamsEnd.
using Microsoft.Extensions.Options;

namespace Platform.Worker;

public sealed class DrainCoordinator : IHostedLifecycleService, IDisposable
{
    private readonly object _lock = new();
    private readonly TimeSpan _grace;
    private readonly TimeProvider _time;
    private readonly ILogger<DrainCoordinator> _logger;
    private readonly CancellationTokenSource _hardStop = new();
    private readonly CancellationTokenSource _streamsEnd = new();
    private readonly TaskCompletionSource _graceOver = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _idle = NewIdle();
    private ITimer? _graceTimer;
    private int _inFlight;
    private bool _draining;

    public DrainCoordinator(IOptions<WorkerOptions> options, TimeProvider time, IHostApplicationLifetime lifetime, ILogger<DrainCoordinator> logger)
    {
        _grace = options.Value.DrainGracePeriod;
        _time = time;
        _logger = logger;
        _idle.TrySetResult();
        lifetime.ApplicationStopping.Register(BeginDrain);
    }

    public bool IsDraining => Volatile.Read(ref _draining);
    public int InFlight => Volatile.Read(ref _inFlight);
    /// <summary>Cancelled when the grace period ends with requests still running.</summary>
    public CancellationToken HardStop => _hardStop.Token;
    /// <summary>Cancelled when draining is over: long-lived streams (KV events) end so the server can stop.</summary>
    public CancellationToken StreamsEnd => _streamsEnd.Token;

    private static TaskCompletionSource NewIdle() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Admits one request, or returns null while draining. Dispose the lease when the request ends.</summary>
    public IDisposable? TryBeginRequest()
    {
        lock (_lock)
        {
            if (_draining) return null;
            if (_inFlight++ == 0) _idle = NewIdle();
            return new Lease(this);
        }
    }

    private void EndRequest()
    {
        lock (_lock)
        {
            if (--_inFlight == 0) _idle.TrySetResult();
        }
    }

    /// <summary>Raised once, when draining begins (after readiness has turned false).</summary>
    public event Action? DrainStarted;

    public void BeginDrain()
    {
        lock (_lock)
        {
            if (_draining) return;
            _draining = true;
            Log.DrainStarted(_logger, _inFlight, _grace.TotalSeconds);
            // The grace period counts from the moment draining begins (SIGTERM), on the injected clock.
            _graceTimer = _time.CreateTimer(_ => _graceOver.TrySetResult(), null, _grace, Timeout.InfiniteTimeSpan);
        }
        DrainStarted?.Invoke();
    }

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        BeginDrain();
        Task idle;
        lock (_lock) idle = _idle.Task;
        try
        {
            // Ends when the work is done, the grace period is over, or the host's shutdown timeout cuts it short.
            await Task.WhenAny(idle, _graceOver.Task, Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken));
            if (idle.IsCompleted)
            {
                Log.DrainCompleted(_logger);
            }
            else
            {
                Log.DrainGraceExpired(_logger, InFlight);
                await _hardStop.CancelAsync();
                // Aborted streams write a final chunk and return; give them a moment, bounded by the shutdown timeout.
                await Task.WhenAny(idle, Task.Delay(TimeSpan.FromSeconds(5), _time, cancellationToken));
            }
        }
        finally
        {
            await _streamsEnd.CancelAsync();
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose()
    {
        _graceTimer?.Dispose();
        _hardStop.Dispose();
        _streamsEnd.Dispose();
    }

    private sealed class Lease(DrainCoordinator owner) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) owner.EndRequest();
        }
    }
}
