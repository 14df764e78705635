// What the router knows of a request that has no first token yet: the worker it
// was last sent to and that worker's last prefill progress report (the
// PrefillProgress chunks of inference.proto). The forwarder writes it as
// progress arrives; the endpoint reads it for the keep-alive comments a streamed
// client sees (": prefill 12288/32512 tokens, 45 s"). One immutable snapshot,
// swapped whole, so a reader never sees a worker from one attempt with the
// counts of another.
using Platform.Core.Protos;

namespace Platform.Router.Forwarding;

/// <param name="WorkerId">The worker the request is on.</param>
/// <param name="Computed">Prompt tokens whose KV is in place (cached ones included); 0 before any report.</param>
/// <param name="Total">Prompt tokens; 0 before any report.</param>
/// <param name="Queued">The worker has not admitted the request yet.</param>
/// <param name="Cached">Of <paramref name="Computed"/>, the tokens found cached.</param>
public sealed record PrefillSnapshot(string WorkerId, int Computed, int Total, bool Queued, int Cached)
{
    public bool Reported => Total > 0;

    /// <summary>The keep-alive comment's text (without the leading ": ").</summary>
    public string Describe(TimeSpan waited) =>
        !Reported ? $"sent to {WorkerId}, {waited.TotalSeconds:0} s"
        : Queued ? $"queued on {WorkerId}, {waited.TotalSeconds:0} s"
        : $"prefill {Computed}/{Total} tokens, {waited.TotalSeconds:0} s";
}

public sealed class PrefillWatch
{
    private PrefillSnapshot? _current;

    /// <summary>The latest snapshot; null until the request was sent to a worker.</summary>
    public PrefillSnapshot? Current => Volatile.Read(ref _current);

    internal void Sent(string workerId) => Volatile.Write(ref _current, new PrefillSnapshot(workerId, 0, 0, Queued: false, 0));

    internal PrefillSnapshot Report(string workerId, PrefillProgress progress)
    {
        var snapshot = new PrefillSnapshot(workerId, progress.ComputedTokens, progress.PromptTokens, progress.Queued, progress.CachedTokens);
        Volatile.Write(ref _current, snapshot);
        return snapshot;
    }
}
