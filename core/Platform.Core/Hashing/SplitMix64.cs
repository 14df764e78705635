// SplitMix64: a 64-bit generator that is tiny, fast and the same on every platform and runtime version. Its n-th
// output depends only on the seed and n, so it serves as a sequential stream (the random test models' weights,
// RandomModelGenerator) and as a counter-based one (the sampler's draw for a seed, an output index and a token id,
// Platform.Engine.Sampling.Sampler, which the device sampler repeats in tensor ops).
namespace Platform.Core.Hashing;

public struct SplitMix64(ulong seed)
{
    /// <summary>What the state advances by per output.</summary>
    public const ulong Gamma = 0x9E3779B97F4A7C15UL;

    private ulong _state = seed;

    /// <summary>The stream's next output.</summary>
    public ulong Next() => Mix(_state += Gamma);

    /// <summary>Output <paramref name="index"/> (from 0) of the stream seeded with <paramref name="seed"/>, without running it.</summary>
    public static ulong At(ulong seed, long index) => Mix(seed + Gamma * (ulong)(index + 1));

    /// <summary>The finalizer: mixes 64 bits into 64 bits, one to one.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
