// KV cache events: what the router's prefix index needs to know about a
// worker's blocks. Every event carries a sequence number that increases by one,
// so a subscriber that sees a gap knows it missed something and resyncs.
namespace Platform.Core.KvEvents;

public enum KvTier { Device = 0, Host = 1, Remote = 2 }

public enum KvEventKind { BlockStored, BlockRemoved, Cleared }

/// <param name="Sequence">Monotonic, gap-free per publisher.</param>
/// <param name="BlockHash">The chained block hash (0 for Cleared).</param>
/// <param name="ParentHash">The parent's hash for BlockStored (0 for a first block).</param>
public readonly record struct KvEvent(long Sequence, KvEventKind Kind, ulong BlockHash, ulong ParentHash, KvTier Tier)
{
    public override string ToString() => Kind switch
    {
        KvEventKind.Cleared => $"#{Sequence} Cleared({Tier})",
        KvEventKind.BlockStored => $"#{Sequence} Stored({BlockHash:x16}<-{ParentHash:x16}, {Tier})",
        _ => $"#{Sequence} Removed({BlockHash:x16}, {Tier})",
    };
}
