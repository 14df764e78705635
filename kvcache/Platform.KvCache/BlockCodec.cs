// Encodes one KV block for the host and remote tiers and decodes it back with
// every check we can make, because a block that decodes wrongly would silently
// corrupt a generation: any mismatch is a miss (recompute), never data. The
// element type is recorded twice (stored and the engine's raw dtype) and checked
// before anything else, so bytes of one dtype are never read as another.
//
// Format (little-endian), 64-byte header then payload:
//   0  u32 magic "PKVB"          4  u16 format version (1)     6  u8 stored dtype   7  u8 reserved (0)
//   8  u64 model fingerprint seed (ModelFingerprint.HashSeed: model, shapes, weights, dtype, block size)
//   16 u64 block hash (chained BlockHasher hash; must equal the key it was fetched under)
//   24 u64 parent hash           32 u32 layers   36 u32 KV heads   40 u32 head dim   44 u32 tokens
//   48 u32 payload bytes         52 u32 raw dtype (the engine's)   56 u64 checksum
//   payload: for each layer, K then V, tokens × heads × dim elements of the stored dtype.
// checksum = XXH3-64(payload, seed = XXH3-64(header bytes 0..56)), so a flipped bit anywhere,
// header or payload, fails the check. Both directions run without allocating.
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Platform.KvCache;

/// <summary>Why a stored block was rejected (a metric label; Ok = accepted).</summary>
public enum DecodeStatus
{
    Ok,
    Truncated,
    BadMagic,
    UnsupportedVersion,
    ForeignModel,
    WrongBlock,
    ShapeMismatch,
    DtypeMismatch,
    LengthMismatch,
    ChecksumMismatch,
}

public static class BlockCodec
{
    public const int HeaderBytes = 64;
    public const uint Magic = 0x42564B50; // "PKVB" read as little-endian u32
    public const ushort FormatVersion = 1;

    /// <summary>Writes the encoded form of <paramref name="raw"/> (the layout's raw bytes) into <paramref name="destination"/>; returns the bytes written.</summary>
    public static int Encode(KvBlockLayout layout, ulong blockHash, ulong parentHash, ReadOnlySpan<byte> raw, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (raw.Length != layout.RawBytes) throw new ArgumentException($"a raw block holds {layout.RawBytes} bytes, got {raw.Length}", nameof(raw));
        if (destination.Length < layout.EncodedBytes) throw new ArgumentException($"an encoded block needs {layout.EncodedBytes} bytes, got {destination.Length}", nameof(destination));
        var header = destination[..HeaderBytes];
        var payload = destination.Slice(HeaderBytes, layout.EncodedBytes - HeaderBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], FormatVersion);
        header[6] = (byte)layout.StoreDtype;
        header[7] = 0;
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], layout.FingerprintSeed);
        BinaryPrimitives.WriteUInt64LittleEndian(header[16..], blockHash);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], parentHash);
        BinaryPrimitives.WriteUInt32LittleEndian(header[32..], (uint)layout.NumLayers);
        BinaryPrimitives.WriteUInt32LittleEndian(header[36..], (uint)layout.KvHeads);
        BinaryPrimitives.WriteUInt32LittleEndian(header[40..], (uint)layout.HeadDim);
        BinaryPrimitives.WriteUInt32LittleEndian(header[44..], (uint)layout.BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header[48..], (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[52..], (uint)layout.RawDtype);
        if (layout.StoreDtype == layout.RawDtype) raw.CopyTo(payload);
        else ToHalf(MemoryMarshal.Cast<byte, float>(raw), MemoryMarshal.Cast<byte, Half>(payload));
        BinaryPrimitives.WriteUInt64LittleEndian(header[56..], Checksum(header, payload));
        return layout.EncodedBytes;
    }

    /// <summary>The parent hash recorded in the header of a block this codec encoded (no checks: for blocks this process wrote).</summary>
    public static ulong ReadParentHash(ReadOnlySpan<byte> encoded)
    {
        if (encoded.Length < HeaderBytes) throw new ArgumentException($"an encoded block starts with a {HeaderBytes}-byte header, got {encoded.Length} bytes", nameof(encoded));
        return BinaryPrimitives.ReadUInt64LittleEndian(encoded[24..]);
    }

    /// <summary>Verifies an encoded block without decoding it; returns its parent hash on success.</summary>
    public static DecodeStatus Verify(KvBlockLayout layout, ulong expectedHash, ReadOnlySpan<byte> encoded, out ulong parentHash, out KvDtype storedDtype)
    {
        ArgumentNullException.ThrowIfNull(layout);
        parentHash = 0;
        storedDtype = 0;
        if (encoded.Length < HeaderBytes) return DecodeStatus.Truncated;
        var header = encoded[..HeaderBytes];
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic) return DecodeStatus.BadMagic;
        if (BinaryPrimitives.ReadUInt16LittleEndian(header[4..]) != FormatVersion || header[7] != 0) return DecodeStatus.UnsupportedVersion;
        // The element type first: a block of another dtype (a bfloat16 engine's, read by a float32 one) is
        // named for what it is, before its (also different) fingerprint.
        var stored = (KvDtype)header[6];
        bool convertible = stored == layout.RawDtype || (stored == KvDtype.Float16 && layout.RawDtype == KvDtype.Float32);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header[52..]) != (uint)layout.RawDtype || !convertible) return DecodeStatus.DtypeMismatch;
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[8..]) != layout.FingerprintSeed) return DecodeStatus.ForeignModel;
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[16..]) != expectedHash) return DecodeStatus.WrongBlock;
        if (BinaryPrimitives.ReadUInt32LittleEndian(header[32..]) != (uint)layout.NumLayers
            || BinaryPrimitives.ReadUInt32LittleEndian(header[36..]) != (uint)layout.KvHeads
            || BinaryPrimitives.ReadUInt32LittleEndian(header[40..]) != (uint)layout.HeadDim
            || BinaryPrimitives.ReadUInt32LittleEndian(header[44..]) != (uint)layout.BlockSize)
            return DecodeStatus.ShapeMismatch;
        long payloadBytes = 2L * layout.NumLayers * layout.ElementsPerTensor * KvBlockLayout.ElementSize(stored);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header[48..]) != payloadBytes) return DecodeStatus.LengthMismatch;
        if (encoded.Length < HeaderBytes + payloadBytes) return DecodeStatus.Truncated;
        if (encoded.Length > HeaderBytes + payloadBytes) return DecodeStatus.LengthMismatch;
        var payload = encoded[HeaderBytes..];
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[56..]) != Checksum(header, payload)) return DecodeStatus.ChecksumMismatch;
        parentHash = BinaryPrimitives.ReadUInt64LittleEndian(header[24..]);
        storedDtype = stored;
        return DecodeStatus.Ok;
    }

    /// <summary>Verifies <paramref name="encoded"/> and writes the block in the engine's raw layout into <paramref name="raw"/>. Nothing is trusted unless the result is Ok.</summary>
    public static DecodeStatus Decode(KvBlockLayout layout, ulong expectedHash, ReadOnlySpan<byte> encoded, Span<byte> raw, out ulong parentHash)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (raw.Length < layout.RawBytes) throw new ArgumentException($"a raw block needs {layout.RawBytes} bytes, got {raw.Length}", nameof(raw));
        var status = Verify(layout, expectedHash, encoded, out parentHash, out var stored);
        if (status != DecodeStatus.Ok) return status;
        var payload = encoded[HeaderBytes..];
        if (stored == layout.RawDtype) payload.CopyTo(raw);
        else FromHalf(MemoryMarshal.Cast<byte, Half>(payload), MemoryMarshal.Cast<byte, float>(raw[..layout.RawBytes]));
        return DecodeStatus.Ok;
    }

    private static ulong Checksum(ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload) =>
        XxHash3.HashToUInt64(payload, (long)XxHash3.HashToUInt64(header[..56]));

    private static void ToHalf(ReadOnlySpan<float> source, Span<Half> destination)
    {
        for (int i = 0; i < source.Length; i++) destination[i] = (Half)source[i];
    }

    private static void FromHalf(ReadOnlySpan<Half> source, Span<float> destination)
    {
        for (int i = 0; i < source.Length; i++) destination[i] = (float)source[i];
    }
}
