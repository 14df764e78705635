namespace Platform.Engine;

/// <summary>Counters for load reports and metrics: a snapshot the engine thread refreshes after every step.</summary>
public sealed record EngineStats(int Running, int Waiting, long QueuedPrefillTokens, int KvBlocksUsed, int KvBlocksFree, int KvBlocksTotal,
    int KvBlocksCached, long Preemptions, long PrefixQueriedBlocks, long PrefixHitBlocks, long Steps);
