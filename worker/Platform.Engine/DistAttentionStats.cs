namespace Platform.Engine;

/// <summary>DistAttention counters of one worker.</summary>
/// <param name="LentBlocks">Blocks of this worker's pool held for peers' sequences.</param>
/// <param name="BorrowingSequences">This worker's sequences that keep part of their KV on peers.</param>
/// <param name="BorrowedBlocks">Blocks those sequences hold on peers.</param>
/// <param name="RemoteAttentionTime">Time finished borrowing sequences spent waiting for peers.</param>
/// <param name="Replans">Segments of a failed creditor reserved on another peer, their KV recomputed, the sequence going on.</param>
/// <param name="RecomputedTokens">Positions whose KV those re-plans computed again.</param>
public sealed record DistAttentionStats(int LentBlocks, int BorrowingSequences, long BorrowedBlocks, TimeSpan RemoteAttentionTime,
    long Replans, long RecomputedTokens);
