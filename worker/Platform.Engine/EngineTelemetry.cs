// Traces of the engine. A request's spans hang under the caller's trace (the
// worker's gRPC span, itself under the router's HTTP span), so one trace runs
// from the router to the engine: engine.queue (arrival → admission),
// engine.prefill (admission → first token), engine.decode (first token →
// finish). Steps serve many requests at once, so engine.step is its own root
// span, linked to every request it advanced. Nothing is recorded when no
// listener is attached (HasListeners), keeping the step loop cheap.
using System.Diagnostics;
using Platform.Engine.Scheduling;

namespace Platform.Engine;

public static class EngineTelemetry
{
    public const string SourceName = "Platform.Engine";
    public static readonly ActivitySource Source = new(SourceName);

    internal static void Span(string name, EngineRequest request, DateTimeOffset start, DateTimeOffset end, params (string Key, object? Value)[] tags)
    {
        if (!Source.HasListeners()) return;
        using var activity = Source.StartActivity(name, ActivityKind.Internal, request.TraceParent, startTime: start);
        if (activity is null) return;
        activity.SetTag("request.id", request.Id);
        foreach (var (k, v) in tags) activity.SetTag(k, v);
        activity.SetEndTime(end.UtcDateTime);
    }

    /// <summary>After a token was streamed: closes the prefill span on the first one and the decode span on the last.</summary>
    internal static void TokenEmitted(EngineRequest r, FinishReason? finish)
    {
        var now = DateTimeOffset.UtcNow;
        if (r.FirstTokenAt is null)
        {
            r.FirstTokenAt = now;
            Span("engine.prefill", r, r.AdmittedAt ?? r.ArrivedAt, now,
                ("prompt.tokens", r.PromptLength), ("cached.tokens", Math.Max(0, r.CachedPromptTokens)), ("preemptions", r.Preemptions));
        }
        if (finish is not null)
            Span("engine.decode", r, r.FirstTokenAt.Value, now, ("completion.tokens", r.OutputLength), ("finish.reason", finish.ToString()));
    }

    internal static Activity? StartStep(IReadOnlyList<ScheduledRequest> scheduled)
    {
        if (!Source.HasListeners()) return null;
        var links = new List<ActivityLink>(scheduled.Count);
        int tokens = 0;
        foreach (var s in scheduled)
        {
            tokens += s.NumTokens;
            if (s.Request.TraceParent != default) links.Add(new ActivityLink(s.Request.TraceParent));
        }
        var activity = Source.StartActivity("engine.step", ActivityKind.Internal, parentContext: default, links: links);
        activity?.SetTag("batch.sequences", scheduled.Count);
        activity?.SetTag("batch.tokens", tokens);
        return activity;
    }
}
