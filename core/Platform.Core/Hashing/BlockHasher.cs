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

    /// <summary>Hash of one full block given its parent's hash. Allocation-free: it runs for every block of every request.</summary>
    public ulong HashBlock(ulong parent, ReadOnlySpan<int> blockTokens)
    {
        if (blockTokens.Length != BlockSize)
            throw new ArgumentException($"a block holds exactly {BlockSize} tokens, got {blockTokens.Length}", nameof(blockTokens));
        int length = 8 + 4 * BlockSize;
        byte[]? rented = length > 4096 ? System.Buffers.ArrayPool<byte>.Shared.Rent(length) : null;
        Span<byte> buffer = rented is null ? stackalloc byte[length] : rented.AsSpan(0, length);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer, parent);
        if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(blockTokens).CopyTo(buffer[8..]);
        else
            for (int i = 0; i < blockTokens.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(buffer.Slice(8 + 4 * i), blockTokens[i]);
        ulong hash = XxHash3.HashToUInt64(buffer, (long)Seed);
        if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        return hash;
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
