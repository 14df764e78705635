// Standard-shape status conditions (type, status, reason, message, observedGeneration,
// lastTransitionTime) for LongContextModel. Conditions.Set moves lastTransitionTime only when
// the status flips, so an unchanged status compares equal and is not written again.
using k8s.Models;

namespace Platform.Operator.Api;

public static class ConditionTypes
{
    public const string Ready = "Ready";
    public const string Progressing = "Progressing";
    public const string Degraded = "Degraded";
    public const string ModelLoaded = "ModelLoaded";
}

public static class ConditionReasons
{
    public const string InvalidSpec = "InvalidSpec";
    public const string SpecValid = "SpecValid";
    public const string RollingOut = "RollingOut";
    public const string RolloutComplete = "RolloutComplete";
    public const string WorkersNotReady = "WorkersNotReady";
    public const string RouterNotReady = "RouterNotReady";
    public const string AllReplicasReady = "AllReplicasReady";
    public const string Loading = "Loading";
    public const string Loaded = "Loaded";
    public const string ScaledToZero = "ScaledToZero";
}

public static class Conditions
{
    public static V1Condition? Find(IEnumerable<V1Condition>? conditions, string type) =>
        conditions?.FirstOrDefault(c => c.Type == type);

    public static bool IsTrue(IEnumerable<V1Condition>? conditions, string type) =>
        Find(conditions, type)?.Status == "True";

    /// <summary>Sets one condition in place; returns true when anything but the timestamp changed.</summary>
    public static bool Set(IList<V1Condition> conditions, string type, bool status, string reason, string message, long generation, DateTimeOffset now)
    {
        var statusText = status ? "True" : "False";
        var existing = Find(conditions, type);
        if (existing is null)
        {
            conditions.Add(new V1Condition
            {
                Type = type,
                Status = statusText,
                Reason = reason,
                Message = message,
                ObservedGeneration = generation,
                LastTransitionTime = now.UtcDateTime,
            });
            return true;
        }

        var changed = existing.Status != statusText || existing.Reason != reason || existing.Message != message || existing.ObservedGeneration != generation;
        if (existing.Status != statusText)
        {
            existing.LastTransitionTime = now.UtcDateTime;
        }

        existing.Status = statusText;
        existing.Reason = reason;
        existing.Message = message;
        existing.ObservedGeneration = generation;
        return changed;
    }
}
