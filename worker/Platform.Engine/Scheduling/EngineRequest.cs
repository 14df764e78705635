// The engine's state for one request. One scheduling model, stated once (as in
// vLLM v1): a request has Tokens (prompt then outputs) and NumComputed, the
// tokens whose KV is in the cache; each step catches NumComputed up towards
// Tokens.Count under a token budget. Prefill, chunked prefill, decode and
// recompute after preemption are all the same thing.
using System.Threading.Channels;
using Platform.Engine.KvCache;

namespace Platform.Engine.Scheduling;

public enum RequestStatus { Waiting, Running, Finished }

public enum FinishReason { Stop, Length, Abort, Error }

/// <summary>A request as the engine runs it; its KV state (KvSequence) is what the KV cache layer sees.</summary>
public sealed class EngineRequest : KvSequence
{
    /// <param name="generated">Outputs already produced elsewhere (migration); they follow the prompt in Tokens.</param>
    public EngineRequest(string id, IReadOnlyList<int> prompt, SamplingParams sampling, ulong seed, int maxTotalTokens,
        bool returnLogits, ChannelWriter<GenerationChunk> output, OutputProcessor processor, long arrivalOrder, IReadOnlyList<int>? generated = null)
        : base(NewTokens(prompt, sampling, generated))
    {
        Id = id;
        PromptLength = prompt.Count;
        Sampling = sampling;
        Seed = seed;
        MaxTotalTokens = maxTotalTokens;
        ReturnLogits = returnLogits;
        Output = output;
        Processor = processor;
        ArrivalOrder = arrivalOrder;
    }

    private static List<int> NewTokens(IReadOnlyList<int> prompt, SamplingParams sampling, IReadOnlyList<int>? generated)
    {
        var tokens = new List<int>(prompt.Count + sampling.MaxTokens);
        tokens.AddRange(prompt);
        if (generated is not null) tokens.AddRange(generated);
        return tokens;
    }

    public string Id { get; }
    public int PromptLength { get; }
    public int OutputLength => Tokens.Count - PromptLength;
    public SamplingParams Sampling { get; }
    public ulong Seed { get; }
    /// <summary>Prompt plus outputs may not exceed this (the context limit).</summary>
    public int MaxTotalTokens { get; }
    public bool ReturnLogits { get; }
    public ChannelWriter<GenerationChunk> Output { get; }
    /// <summary>Detokenizer and stop checker of this request's output.</summary>
    public OutputProcessor Processor { get; }
    public long ArrivalOrder { get; }

    /// <summary>The caller's trace context, so the engine's spans join the request's trace.</summary>
    public System.Diagnostics.ActivityContext TraceParent { get; init; }
    public DateTimeOffset ArrivedAt { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset? AdmittedAt { get; set; }
    public DateTimeOffset? FirstTokenAt { get; set; }
    /// <summary>When the last progress chunk was written (null: none yet).</summary>
    public DateTimeOffset? LastProgressAt { get; set; }

    public RequestStatus Status { get; set; } = RequestStatus.Waiting;
    /// <summary>Prompt tokens served from the prefix cache at first admission.</summary>
    public int CachedPromptTokens { get; set; } = -1;
    /// <summary>Prompt tokens of CachedPromptTokens that came from the host tier and from the remote store.</summary>
    public int CachedHostTokens { get; set; }
    public int CachedRemoteTokens { get; set; }
    public int Preemptions { get; set; }
    /// <summary>Seen tokens and output counts for the sampling penalties; created on the first step that needs them.</summary>
    public Sampling.PenaltyState? Penalties { get; set; }
    public int RemainingTokens => Tokens.Count - NumComputed;

    /// <summary>DistAttention: where the positions beyond this worker's share live (null for a local sequence).</summary>
    public DistAttention.DistSequence? Dist { get; set; }
    /// <summary>Positions whose KV lives in this worker's pool.</summary>
    public override int LocalTokenLimit => Dist?.LocalTokens ?? int.MaxValue;
    /// <summary>True when the next tokens to compute lie on creditors.</summary>
    public bool ComputesRemotely => Dist is not null && NumComputed >= Dist.LocalTokens;
}

/// <summary>One streamed piece of a generation.</summary>
/// <param name="TokenIds">Tokens generated since the previous chunk (none on a progress chunk).</param>
/// <param name="Text">Text for those tokens (may lag behind them at UTF-8 or stop-string boundaries).</param>
/// <param name="Logits">With ReturnLogits: the logits each token was sampled from.</param>
/// <param name="Progress">Set on a progress chunk (no tokens, no text, no finish): how far the prompt's prefill is, or that it is queued.</param>
/// <param name="Times">Set on the chunk with the first token: the request's time queued and prefilling.</param>
/// <param name="Logprobs">With SamplingParams.Logprobs: one entry per token of TokenIds, in the same order.</param>
public sealed record GenerationChunk(
    IReadOnlyList<int> TokenIds,
    string Text,
    FinishReason? Finish,
    int PromptTokens,
    int CachedTokens,
    int CompletionTokens,
    IReadOnlyList<float[]>? Logits = null,
    string? Error = null,
    CachedTokenSplit CachedByTier = default,
    PrefillProgress? Progress = null,
    FirstTokenTimes? Times = null,
    IReadOnlyList<Sampling.TokenLogprobs>? Logprobs = null);

/// <summary>A waiting or prefilling request's state: Computed of Total prompt tokens have their KV in place, Cached of them found cached.</summary>
/// <param name="Queued">Not admitted yet (waiting for memory or a batch slot); Computed is then 0.</param>
public readonly record struct PrefillProgress(int Computed, int Total, bool Queued, int Cached);

/// <summary>Arrival to first scheduled (vLLM's queue time) and first scheduled to first token (its prefill time).</summary>
public readonly record struct FirstTokenTimes(TimeSpan Queue, TimeSpan Prefill);

/// <summary>Cached prompt tokens by the tier they came from (they add up to CachedTokens).</summary>
public readonly record struct CachedTokenSplit(int Device, int Host, int Remote);
