// Detects an engine that has work but makes no progress (a hung forward pass, a
// deadlock on the engine thread): liveness then fails so Kubernetes restarts the
// pod, and readiness fails so the router stops sending. "Health says 200 while
// the engine hangs" is the complaint this answers. Progress is the engine's step
// counter, which the stats snapshot refreshes after every step; it is sampled
// whenever health is evaluated (every publisher period and on each probe).
using Microsoft.Extensions.Options;
using Platform.Engine;

namespace Platform.Worker;

public sealed class EngineWatchdog
{
    private readonly Func<EngineStats?> _stats;
    private readonly TimeSpan _limit;
    private readonly TimeProvider _time;
    private readonly object _lock = new();
    private long _lastSteps = -1;
    private long _lastProgress;

    public EngineWatchdog(EngineHost engines, IOptions<WorkerOptions> options, TimeProvider time)
        : this(() => engines.Engine?.GetStats(), TimeSpan.FromSeconds(options.Value.EngineStallSeconds), time)
    {
    }

    internal EngineWatchdog(Func<EngineStats?> stats, TimeSpan limit, TimeProvider time)
    {
        _stats = stats;
        _limit = limit;
        _time = time;
    }

    /// <summary>How long the engine has had work without finishing a step, when that exceeds the limit; else null.</summary>
    public TimeSpan? Stalled()
    {
        var s = _stats();
        if (s is null) return null;
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            if (s.Running + s.Waiting == 0 || s.Steps != _lastSteps)
            {
                _lastSteps = s.Steps;
                _lastProgress = now;
                return null;
            }
            var without = _time.GetElapsedTime(_lastProgress, now);
            return without > _limit ? without : null;
        }
    }
}
