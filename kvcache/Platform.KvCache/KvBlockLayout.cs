// The shape of one KV block as the engine holds it and as the tiers store it:
// for every layer, K then V of BlockSize tokens × KvHeads × HeadDim elements,
// layer after layer ("raw" layout, the engine's element type). The stored
// (encoded) form may use a smaller element type (float16) to halve host memory
// and network traffic. Every size the codec and the tiers need is computed here
// once, so a block's byte count is a fixed number per engine.
using Platform.Core.Models;

namespace Platform.KvCache;

/// <summary>Element type of KV data. Values are part of the stored format: never renumber.</summary>
public enum KvDtype : byte
{
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Named after the dtype it stores, like BFloat16 and Float16 beside it.")]
    Float32 = 1,
    Float16 = 2,
    BFloat16 = 3,
}

public sealed class KvBlockLayout
{
    public KvBlockLayout(ulong fingerprintSeed, int numLayers, int kvHeads, int headDim, int blockSize, KvDtype rawDtype, KvDtype storeDtype)
    {
        if (numLayers < 1 || kvHeads < 1 || headDim < 1 || blockSize < 1)
            throw new ArgumentException($"a KV block needs positive layers, heads, head dim and block size (got {numLayers}, {kvHeads}, {headDim}, {blockSize})");
        if (storeDtype != rawDtype && !(rawDtype == KvDtype.Float32 && storeDtype == KvDtype.Float16))
            throw new ArgumentException($"KV blocks of {rawDtype} cannot be stored as {storeDtype}; use the engine's own dtype, or float16 when the engine computes in float32.");
        FingerprintSeed = fingerprintSeed;
        NumLayers = numLayers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        BlockSize = blockSize;
        RawDtype = rawDtype;
        StoreDtype = storeDtype;
        ElementsPerTensor = blockSize * kvHeads * headDim;
        long raw = 2L * numLayers * ElementsPerTensor * ElementSize(rawDtype);
        long stored = 2L * numLayers * ElementsPerTensor * ElementSize(storeDtype);
        if (BlockCodec.HeaderBytes + stored > int.MaxValue / 2)
            throw new ArgumentException($"a KV block of {stored} bytes is too large to store; use a smaller block size.");
        RawBytes = (int)raw;
        EncodedBytes = BlockCodec.HeaderBytes + (int)stored;
    }

    /// <summary>The layout for an engine with this fingerprint.</summary>
    public static KvBlockLayout For(ModelFingerprint fingerprint, KvDtype rawDtype, KvDtype storeDtype)
    {
        ArgumentNullException.ThrowIfNull(fingerprint);
        return new(fingerprint.HashSeed, fingerprint.NumLayers, fingerprint.NumKvHeads, fingerprint.HeadDim, fingerprint.BlockSize, rawDtype, storeDtype);
    }

    /// <summary>The model fingerprint's hash seed: blocks of another model or setting never decode.</summary>
    public ulong FingerprintSeed { get; }
    public int NumLayers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int BlockSize { get; }
    public KvDtype RawDtype { get; }
    public KvDtype StoreDtype { get; }
    /// <summary>Elements of one layer's K (or V) for one block.</summary>
    public int ElementsPerTensor { get; }
    /// <summary>Bytes of one block in the engine's layout.</summary>
    public int RawBytes { get; }
    /// <summary>Bytes of one encoded block (header + stored payload).</summary>
    public int EncodedBytes { get; }

    public static int ElementSize(KvDtype dtype) => dtype switch
    {
        KvDtype.Float32 => 4,
        KvDtype.Float16 or KvDtype.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown KV dtype"),
    };

    /// <summary>Parses "float32", "float16", "bfloat16" (and short forms).</summary>
    public static KvDtype ParseDtype(string name) => name.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => KvDtype.Float32,
        "float16" or "fp16" or "f16" or "half" => KvDtype.Float16,
        "bfloat16" or "bf16" => KvDtype.BFloat16,
        _ => throw new ArgumentException($"unknown KV dtype '{name}'; use float32, float16 or bfloat16."),
    };
}
