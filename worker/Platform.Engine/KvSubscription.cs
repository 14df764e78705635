using Platform.Core.KvEvents;

namespace Platform.Engine;

/// <summary>A live KV event subscription with the snapshot it starts from.</summary>
public sealed class KvSubscription(long lastSequence, IReadOnlyList<(ulong Hash, ulong Parent)> blocks,
    IReadOnlyList<(ulong Hash, ulong Parent, KvTier Tier)> tierBlocks, Action unsubscribe) : IDisposable
{
    public long SnapshotSequence { get; } = lastSequence;
    /// <summary>Blocks in the device pool.</summary>
    public IReadOnlyList<(ulong Hash, ulong Parent)> CachedBlocks { get; } = blocks;
    /// <summary>Blocks in the host tier and (as far as this worker knows) the remote store.</summary>
    public IReadOnlyList<(ulong Hash, ulong Parent, KvTier Tier)> TierBlocks { get; } = tierBlocks;
    public void Dispose() => unsubscribe();
}
