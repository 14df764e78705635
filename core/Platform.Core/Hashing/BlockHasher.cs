// Chained content hashes of KV-cache blocks: the one implementation shared by
// the engine (prefix cache, KV events, KV tier keys) and the router (prefix
// index). hash(block i) = XXH3-64(parent hash ‖ token ids of block i, seed),
// where the seed is derived from the model fingerprint, so equal hashes mean
// "same tokens, same prefix, same model and block size". Router and engine must
// agree on block size and seed or every lookup silently misses; both come from
// ModelFingerprint, never from separate settings.
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Platform.Core.Hashing;

public sealed class BlockHasher
{
    /// <summary>The parent "hash" of the first block of every sequence.</summary>
    public const ulong RootParent = 0;

    public int BlockSize { get; }
    public ulong Seed { get; }

    public BlockHasher(int blockSize, ulong seed)
    {
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be positive");
        BlockSize = blockSize;
        Seed = seed;
    }

    /// <summary>Hash of one full block given its parent's hash.</summary>
    public ulong HashBlock(ulong parent, ReadOnlySpan<int> blockTokens)
    {
        if (blockTokens.Length != BlockSize)
            throw new ArgumentException($"a block holds exactly {BlockSize} tokens, got {blockTokens.Length}", nameof(blockTokens));
        var hasher = new XxHash3((long)Seed);
        Span<byte> parentBytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(parentBytes, parent);
        hasher.Append(parentBytes);
        if (BitConverter.IsLittleEndian)
        {
            hasher.Append(MemoryMarshal.AsBytes(blockTokens));
        }
        else
        {
            Span<byte> tok = stackalloc byte[4];
            foreach (int t in blockTokens)
            {
                BinaryPrimitives.WriteInt32LittleEndian(tok, t);
                hasher.Append(tok);
            }
        }
        return hasher.GetCurrentHashAsUInt64();
    }

    /// <summary>Hashes of every full block of <paramref name="tokens"/>, in order (a partial tail block has none).</summary>
    public ulong[] HashPrefix(ReadOnlySpan<int> tokens)
    {
        var hashes = new ulong[tokens.Length / BlockSize];
        ulong parent = RootParent;
        for (int i = 0; i < hashes.Length; i++)
        {
            parent = HashBlock(parent, tokens.Slice(i * BlockSize, BlockSize));
            hashes[i] = parent;
        }
        return hashes;
    }

    /// <summary>Appends the hashes of blocks that became full since <paramref name="hashes"/> was last extended.</summary>
    public void ExtendHashes(List<ulong> hashes, ReadOnlySpan<int> tokens)
    {
        int full = tokens.Length / BlockSize;
        ulong parent = hashes.Count == 0 ? RootParent : hashes[^1];
        for (int i = hashes.Count; i < full; i++)
        {
            parent = HashBlock(parent, tokens.Slice(i * BlockSize, BlockSize));
            hashes.Add(parent);
        }
    }
}
