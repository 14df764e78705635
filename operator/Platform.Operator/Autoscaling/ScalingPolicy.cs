// The built-in autoscaling policy. From the router's load (queued prefill tokens over all
// workers, mean KV-cache utilisation) it computes a raw replica count: enough replicas that
// each has at most targetQueuedPrefillTokensPerReplica queued, and enough that KV utilisation
// falls to targetKvUtilization. The stabiliser then works like the HPA's: a scale-up takes the
// lowest recommendation seen within the up window, a scale-down the highest within the down
// window (default 300 s), so a brief dip or spike does not make the replica count flap.
using Platform.Operator.Api;

namespace Platform.Operator.Autoscaling;

/// <summary>Load read from the router's metrics.</summary>
public sealed record RouterLoad(double QueuedPrefillTokens, double KvUtilization);

public static class ScalingPolicy
{
    public static int Recommend(int currentReplicas, RouterLoad load, AutoscalingSpec spec)
    {
        var current = Math.Max(1, currentReplicas);
        var byQueue = (int)Math.Ceiling(Math.Max(0, load.QueuedPrefillTokens) / spec.TargetQueuedPrefillTokensPerReplica);
        var byKv = (int)Math.Ceiling(current * Math.Clamp(load.KvUtilization, 0, 1) / spec.TargetKvUtilization);
        return Math.Clamp(Math.Max(byQueue, byKv), spec.MinReplicas, spec.MaxReplicas);
    }
}

/// <summary>Per-model history of recommendations; not thread-safe (one reconcile per model at a time).</summary>
public sealed class ScaleStabilizer
{
    private readonly List<(DateTimeOffset At, int Replicas, bool Seed)> _history = [];

    public int Stabilize(DateTimeOffset now, int recommendation, int current, TimeSpan upWindow, TimeSpan downWindow)
    {
        if (_history.Count == 0)
        {
            // A fresh stabiliser (new model, operator restart, failover) counts the current size as
            // just recommended, so it never scales down before a full down window of evidence.
            _history.Add((now, current, true));
        }

        _history.Add((now, recommendation, false));
        var keep = upWindow > downWindow ? upWindow : downWindow;
        _history.RemoveAll(h => now - h.At > keep);
        if (recommendation > current)
        {
            var lowest = _history.Where(h => !h.Seed && now - h.At < upWindow).Select(h => h.Replicas).Append(recommendation).Min();
            return Math.Max(current, lowest);
        }

        if (recommendation < current)
        {
            var highest = _history.Where(h => now - h.At <= downWindow).Max(h => h.Replicas);
            return Math.Min(current, highest);
        }

        return current;
    }
}
