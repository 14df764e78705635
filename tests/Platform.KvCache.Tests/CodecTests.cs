// Block codec: round trips in every supported dtype, and every kind of damage
// (truncation, bad magic, version, foreign model, wrong key, shape, dtype,
// length, a flipped bit anywhere) decodes as a miss, never as data.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Platform.KvCache;

namespace Platform.KvCache.Tests;

public sealed class CodecTests
{
    private const ulong Seed = 0xFEED_BEEF_1234_5678;
    private const ulong Hash = 0x1111_2222_3333_4444;
    private const ulong Parent = 0x5555_6666_7777_8888;

    internal static KvBlockLayout Layout(KvDtype raw = KvDtype.Float32, KvDtype store = KvDtype.Float32, ulong seed = Seed, int layers = 2, int heads = 2, int dim = 8, int block = 4) =>
        new(seed, layers, heads, dim, block, raw, store);

    internal static byte[] RandomRaw(KvBlockLayout layout, int seed = 7)
    {
        var raw = new byte[layout.RawBytes];
        var rng = new Random(seed);
        if (layout.RawDtype == KvDtype.Float32)
        {
            var f = MemoryMarshal.Cast<byte, float>(raw.AsSpan());
            for (int i = 0; i < f.Length; i++) f[i] = (float)(rng.NextDouble() * 4 - 2);
        }
        else rng.NextBytes(raw);
        return raw;
    }

    private static byte[] Encode(KvBlockLayout layout, byte[] raw, ulong hash = Hash)
    {
        var encoded = new byte[layout.EncodedBytes];
        Assert.Equal(layout.EncodedBytes, BlockCodec.Encode(layout, hash, Parent, raw, encoded));
        return encoded;
    }

    [Fact]
    public void The_parent_hash_is_read_back_from_the_header_by_the_codec()
    {
        var layout = Layout();
        var encoded = Encode(layout, RandomRaw(layout));
        Assert.Equal(Parent, BlockCodec.ReadParentHash(encoded));
        Assert.Equal(DecodeStatus.Ok, BlockCodec.Verify(layout, Hash, encoded, out ulong verified, out _));
        Assert.Equal(verified, BlockCodec.ReadParentHash(encoded));
        Assert.Throws<ArgumentException>(() => BlockCodec.ReadParentHash(encoded.AsSpan(0, BlockCodec.HeaderBytes - 1)));
    }

    [Theory]
    [InlineData(KvDtype.Float32)]
    [InlineData(KvDtype.BFloat16)]
    [InlineData(KvDtype.Float16)]
    public void Round_trip_in_the_engine_dtype_is_exact(KvDtype dtype)
    {
        var layout = Layout(dtype, dtype);
        var raw = RandomRaw(layout);
        var encoded = Encode(layout, raw);
        var back = new byte[layout.RawBytes];
        Assert.Equal(DecodeStatus.Ok, BlockCodec.Decode(layout, Hash, encoded, back, out ulong parent));
        Assert.Equal(Parent, parent);
        Assert.Equal(raw, back);
    }

    [Fact]
    public void Float16_storage_halves_the_payload_and_round_trips_within_half_precision()
    {
        var layout = Layout(KvDtype.Float32, KvDtype.Float16);
        Assert.Equal(BlockCodec.HeaderBytes + layout.RawBytes / 2, layout.EncodedBytes);
        var raw = RandomRaw(layout);
        var back = new byte[layout.RawBytes];
        Assert.Equal(DecodeStatus.Ok, BlockCodec.Decode(layout, Hash, Encode(layout, raw), back, out _));
        var a = MemoryMarshal.Cast<byte, float>(raw);
        var b = MemoryMarshal.Cast<byte, float>(back);
        for (int i = 0; i < a.Length; i++) Assert.InRange(Math.Abs(a[i] - b[i]), 0, 2e-3);
        // A float32 worker reads float16 blocks written by a float16-storing peer, and vice versa decodes a full-size block.
        var native = Layout();
        Assert.Equal(DecodeStatus.Ok, BlockCodec.Decode(native, Hash, Encode(layout, raw), back, out _));
    }

    public static TheoryData<string, DecodeStatus> Corruptions() => new()
    {
        { "empty", DecodeStatus.Truncated },
        { "header-only", DecodeStatus.Truncated },
        { "one-byte-short", DecodeStatus.Truncated },
        { "extra-byte", DecodeStatus.LengthMismatch },
        { "magic", DecodeStatus.BadMagic },
        { "version", DecodeStatus.UnsupportedVersion },
        { "foreign-model", DecodeStatus.ForeignModel },
        { "wrong-key", DecodeStatus.WrongBlock },
        { "shape", DecodeStatus.ShapeMismatch },
        { "dtype", DecodeStatus.DtypeMismatch },
        { "length-field", DecodeStatus.LengthMismatch },
        { "payload-bit", DecodeStatus.ChecksumMismatch },
        { "last-byte", DecodeStatus.ChecksumMismatch },
        { "parent-bit", DecodeStatus.ChecksumMismatch },
        { "checksum-bit", DecodeStatus.ChecksumMismatch },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Every_corruption_is_a_miss_and_leaves_the_destination_untouched(string kind, DecodeStatus expected)
    {
        var layout = Layout();
        var raw = RandomRaw(layout);
        var good = Encode(layout, raw);
        ulong expectHash = Hash;
        byte[] bad = kind switch
        {
            "empty" => [],
            "header-only" => good[..BlockCodec.HeaderBytes],
            "one-byte-short" => good[..^1],
            "extra-byte" => [.. good, 0],
            "foreign-model" => Encode(Layout(seed: Seed + 1), raw),
            "shape" => Encode(Layout(layers: 1, heads: 4), RandomRaw(Layout(layers: 1, heads: 4))),
            _ => (byte[])good.Clone(),
        };
        switch (kind)
        {
            case "magic": bad[0] ^= 0xFF; break;
            case "dtype":
                bad[6] = (byte)KvDtype.BFloat16;
                BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(52), (uint)KvDtype.BFloat16);
                break;
            case "version": BinaryPrimitives.WriteUInt16LittleEndian(bad.AsSpan(4), 2); break;
            case "wrong-key": expectHash = Hash + 1; break;
            case "length-field": BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(48), (uint)(layout.EncodedBytes - BlockCodec.HeaderBytes - 4)); break;
            case "payload-bit": bad[BlockCodec.HeaderBytes + 100] ^= 0x04; break;
            case "last-byte": bad[^1] ^= 0x80; break;
            case "parent-bit": bad[24] ^= 0x01; break;
            case "checksum-bit": bad[60] ^= 0x10; break;
        }
        if (kind == "shape")
            Assert.Equal(layout.RawBytes, Layout(layers: 1, heads: 4).RawBytes); // same byte count: only the header can tell
        var destination = new byte[layout.RawBytes];
        Assert.Equal(expected, BlockCodec.Decode(layout, expectHash, bad, destination, out _));
        Assert.All(destination, b => Assert.Equal(0, b));
    }

    [Fact]
    public void A_float16_block_is_refused_by_a_bfloat16_engine()
    {
        var half = Layout(KvDtype.Float32, KvDtype.Float16);
        var encoded = Encode(half, RandomRaw(half));
        var bf16 = Layout(KvDtype.BFloat16, KvDtype.BFloat16);
        Assert.Equal(DecodeStatus.DtypeMismatch, BlockCodec.Decode(bf16, Hash, encoded, new byte[bf16.RawBytes], out _));
    }

    [Fact]
    public void A_bfloat16_engines_block_is_a_dtype_mismatch_for_a_float32_engine_never_a_misread()
    {
        // As two engines of one model would: other dtype, so another fingerprint seed too. The dtype is checked first.
        var bf16 = Layout(KvDtype.BFloat16, KvDtype.BFloat16, seed: Seed ^ 0xB16);
        var encoded = Encode(bf16, RandomRaw(bf16));
        var fp32 = Layout();
        var destination = new byte[fp32.RawBytes];
        Assert.Equal(DecodeStatus.DtypeMismatch, BlockCodec.Decode(fp32, Hash, encoded, destination, out _));
        Assert.All(destination, b => Assert.Equal(0, b));
        // And the other way round, with the same seed (only the dtype differs).
        var fp32Block = Encode(fp32, RandomRaw(fp32));
        Assert.Equal(DecodeStatus.DtypeMismatch, BlockCodec.Decode(Layout(KvDtype.BFloat16, KvDtype.BFloat16), Hash, fp32Block, new byte[bf16.RawBytes], out _));
    }

    [Fact]
    public void Unsupported_store_dtypes_are_refused_with_a_message()
    {
        var e = Assert.Throws<ArgumentException>(() => Layout(KvDtype.BFloat16, KvDtype.Float16));
        Assert.Contains("float16 when the engine computes in float32", e.Message, StringComparison.Ordinal);
    }
}
