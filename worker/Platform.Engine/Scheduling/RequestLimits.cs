// What one engine can take, checked when a request is submitted so that a
// request that can never be served fails at once (a 400 naming the fix) rather
// than waiting in the queue: token ids in the vocabulary, prompt plus max_tokens
// within the context, and the prompt's KV within the pool unless DistAttention
// may borrow the rest from peers.
namespace Platform.Engine.Scheduling;

/// <param name="CanBorrow">DistAttention is on: a sequence whose whole KV does not fit here may borrow from peers.</param>
public sealed record RequestLimits(int VocabSize, int MaxContextTokens, int BlockSize, int KvBlocks, bool CanBorrow)
{
    /// <summary>
    /// Throws <see cref="EngineRequestException"/> for a request that cannot be served; else returns the tokens its
    /// sequence may reach and whether it must borrow KV memory from peers.
    /// </summary>
    /// <param name="generated">Outputs already produced elsewhere (a migrated request), or null.</param>
    public (int TotalTokens, bool Distributed) Check(IReadOnlyList<int> prompt, SamplingParams sampling, IReadOnlyList<int>? generated = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(sampling);
        sampling.Validate();
        if (prompt.Count == 0) throw new EngineRequestException("the prompt is empty; send at least one token.");
        foreach (int id in generated is null ? prompt : prompt.Concat(generated))
            if (id < 0 || id >= VocabSize)
                throw new EngineRequestException($"token id {id} is outside the vocabulary [0, {VocabSize}).");
        int already = generated?.Count ?? 0;
        if (already >= sampling.MaxTokens)
            throw new EngineRequestException($"the request already generated {already} tokens, which reaches its max_tokens ({sampling.MaxTokens}); nothing is left to continue.");
        if (prompt.Count >= MaxContextTokens)
            throw new EngineRequestException($"the prompt has {prompt.Count} tokens but this model's context holds at most {MaxContextTokens}; shorten the prompt.");
        if (prompt.Count + sampling.MaxTokens > MaxContextTokens)
            throw new EngineRequestException(
                $"the prompt ({prompt.Count} tokens) plus max_tokens ({sampling.MaxTokens}) exceeds the context of {MaxContextTokens} tokens; lower max_tokens to at most {MaxContextTokens - prompt.Count}.");
        int totalTokens = Math.Min(prompt.Count + sampling.MaxTokens, MaxContextTokens);
        bool distributed = CanBorrow && BlocksFor(totalTokens) > KvBlocks;
        int needBlocks = BlocksFor(prompt.Count + already + 1);
        if (!distributed && needBlocks > KvBlocks)
            throw new EngineRequestException(
                $"the prompt needs {needBlocks * BlockSize} tokens of KV cache but this worker holds {KvBlocks * BlockSize}; shorten the prompt, give the worker more KV memory, or turn DistAttention on to borrow from peers.");
        return (totalTokens, distributed);
    }

    private int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;
}
