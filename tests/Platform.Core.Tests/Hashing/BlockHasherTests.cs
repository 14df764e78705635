// The chained block hash the engine and router share: equal prefixes give equal
// hashes, any difference in a block changes it and every later one, and the
// seed (model fingerprint) separates models.
using System.Buffers.Binary;
using System.IO.Hashing;
using Platform.Core.Hashing;

namespace Platform.Core.Tests.Hashing;

public sealed class BlockHasherTests
{
    private static int[] Tokens(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(0, 50000)).ToArray(); }

    [Fact]
    public void Hashes_chain_over_full_blocks_only()
    {
        var h = new BlockHasher(16, 42);
        var tokens = Tokens(50, 1);
        var hashes = h.HashPrefix(tokens);
        Assert.Equal(3, hashes.Length);
        Assert.Equal(hashes[..2], h.HashPrefix(tokens.AsSpan(0, 40)));
        var changed = (int[])tokens.Clone();
        changed[20]++;   // second block
        var other = h.HashPrefix(changed);
        Assert.Equal(hashes[0], other[0]);
        Assert.NotEqual(hashes[1], other[1]);
        Assert.NotEqual(hashes[2], other[2]);   // the chain carries the difference forward
        Assert.NotEqual(hashes, new BlockHasher(16, 43).HashPrefix(tokens));
    }

    [Fact]
    public void The_hash_is_xxh3_of_parent_and_little_endian_tokens_with_the_seed()
    {
        // Pinned definition, so another implementation (or a future refactor) can agree byte for byte.
        var h = new BlockHasher(4, 7);
        int[] block = [1, 2, 3, 70000];
        var bytes = new byte[8 + 16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 99);
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8 + 4 * i), block[i]);
        Assert.Equal(XxHash3.HashToUInt64(bytes, 7), h.HashBlock(99, block));
    }

    [Fact]
    public void Extending_incrementally_equals_hashing_at_once()
    {
        var h = new BlockHasher(8, 5);
        var tokens = Tokens(70, 3);
        var list = new List<ulong>();
        for (int n = 0; n <= tokens.Length; n += 5) h.ExtendHashes(list, tokens.AsSpan(0, n));
        h.ExtendHashes(list, tokens);
        Assert.Equal(h.HashPrefix(tokens), list);
    }
}
