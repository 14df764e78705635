// The engine's state for one request. One scheduling model, stated once (as in
// vLLM v1): a request has Tokens (prompt then outputs) and NumComputed, the
// tokens whose KV is in the cache; each step catches NumComputed up towards
// Tokens.Count under a token budget. Prefill, chunked prefill, decode and
// recompute after preemption are all the same thing.
using System.Threading.Channels;

namespace Platform.Engine.Scheduling;

public enum RequestStatus { Waiting, Running, Finished }

public enum FinishReason { Stop, Length, Abort, Error }

public sealed class EngineRequest
{
    public EngineRequest(string id, IReadOnlyList<int> prompt, SamplingParams sampling, ulong seed, int maxTotalTokens,
        bool returnLogits, ChannelWriter<GenerationChunk> output, OutputProcessor processor, long arrivalOrder)
    {
        Id = id;
        Tokens = new List<int>(prompt.Count + sampling.MaxTokens);
        Tokens.AddRange(prompt);
        PromptLength = prompt.Count;
        Sampling = sampling;
        Seed = seed;
        MaxTotalTokens = maxTotalTokens;
        ReturnLogits = returnLogits;
        Output = output;
        Processor = processor;
        ArrivalOrder = arrivalOrder;
    }

    public string Id { get; }
    public List<int> Tokens { get; }
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

    public RequestStatus Status { get; set; } = RequestStatus.Waiting;
    public int NumComputed { get; set; }
    /// <summary>KV blocks, in sequence order.</summary>
    public List<int> Blocks { get; } = [];
    /// <summary>Chained hashes of the full blocks of Tokens (extended as tokens arrive).</summary>
    public List<ulong> BlockHashes { get; } = [];
    /// <summary>How many leading blocks are already registered in the prefix cache.</summary>
    public int NumCachedBlocks { get; set; }
    /// <summary>Prompt tokens served from the prefix cache at first admission.</summary>
    public int CachedPromptTokens { get; set; } = -1;
    /// <summary>Prompt tokens of CachedPromptTokens that came from the host tier and from the remote store.</summary>
    public int CachedHostTokens { get; set; }
    public int CachedRemoteTokens { get; set; }
    /// <summary>Blocks the last prefix lookup loaded from host / remote (set by the KV tier at admission).</summary>
    public int LookupHostBlocks { get; set; }
    public int LookupRemoteBlocks { get; set; }
    /// <summary>Blocks fetched from the remote store before queueing, waiting to be loaded at admission (owned by this request).</summary>
    public KvCache.PrefetchedBlocks? Prefetch { get; set; }

    /// <summary>Gives the prefetched blocks back (they were loaded at admission, or the request ended).</summary>
    public void ReleasePrefetch()
    {
        Prefetch?.Dispose();
        Prefetch = null;
    }
    public int Preemptions { get; set; }
    public int RemainingTokens => Tokens.Count - NumComputed;

    /// <summary>DistAttention: where the positions beyond this worker's share live (null for a local sequence).</summary>
    public DistAttention.DistSequence? Dist { get; set; }
    /// <summary>Positions whose KV lives in this worker's pool.</summary>
    public int LocalTokenLimit => Dist?.LocalTokens ?? int.MaxValue;
    /// <summary>True when the next tokens to compute lie on creditors.</summary>
    public bool ComputesRemotely => Dist is not null && NumComputed >= Dist.LocalTokens;
}

/// <summary>One streamed piece of a generation.</summary>
/// <param name="TokenIds">Tokens generated since the previous chunk.</param>
/// <param name="Text">Text for those tokens (may lag behind them at UTF-8 or stop-string boundaries).</param>
/// <param name="Logits">With ReturnLogits: the logits each token was sampled from.</param>
public sealed record GenerationChunk(
    IReadOnlyList<int> TokenIds,
    string Text,
    FinishReason? Finish,
    int PromptTokens,
    int CachedTokens,
    int CompletionTokens,
    IReadOnlyList<float[]>? Logits = null,
    string? Error = null,
    CachedTokenSplit CachedByTier = default);

/// <summary>Cached prompt tokens by the tier they came from (they add up to CachedTokens).</summary>
public readonly record struct CachedTokenSplit(int Device, int Host, int Remote);
