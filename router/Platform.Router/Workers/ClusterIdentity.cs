// What every worker behind this router must agree on: the model fingerprint,
// the KV block size and the block-hash seed (llm-d's rule: if router and engine
// disagree on either, every prefix lookup silently misses), plus the served
// model name. The first worker to answer GetInfo fixes the identity; a worker
// that disagrees is refused and stays out of the pool.
using Platform.Core.Hashing;
using Platform.Core.Protos;

namespace Platform.Router.Workers;

public sealed class ClusterIdentity
{
    public ClusterIdentity(WorkerInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        Fingerprint = info.ModelFingerprint;
        BlockSize = info.BlockSize;
        Seed = info.BlockHashSeed;
        ServedModelName = info.ServedModelName;
        MaxContextTokens = info.MaxContextTokens;
        Hasher = new BlockHasher(info.BlockSize, info.BlockHashSeed);
    }

    public string Fingerprint { get; }
    public int BlockSize { get; }
    public ulong Seed { get; }
    public string ServedModelName { get; }
    public int MaxContextTokens { get; }
    public BlockHasher Hasher { get; }

    /// <summary>Null when <paramref name="info"/> agrees; otherwise why the worker is refused.</summary>
    public string? Disagreement(WorkerInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (info.ModelFingerprint != Fingerprint)
            return $"model fingerprint {info.ModelFingerprint} differs from the pool's {Fingerprint}; start every worker on the same model, dtype and block size.";
        if (info.BlockSize != BlockSize || info.BlockHashSeed != Seed)
            return $"block size/seed {info.BlockSize}/{info.BlockHashSeed:x16} differ from the pool's {BlockSize}/{Seed:x16}; prefix lookups would silently miss.";
        if (info.ServedModelName != ServedModelName)
            return $"served model name '{info.ServedModelName}' differs from the pool's '{ServedModelName}'.";
        return null;
    }
}
