// Which element type the KV tier stores for an engine: blocks leave the pools
// in the compute dtype (float32, bfloat16, float16) untouched; only a float32
// engine may ask for float16 storage (--kv-store-dtype float16, lossy). A
// bfloat16 engine asking for float16 is refused: its blocks are already 2 bytes
// per element and the conversion would lose range.
using Platform.Engine.Torch;
using Platform.KvCache;
using static TorchSharp.torch;

namespace Platform.Engine.KvCache;

public static class KvTierDtypes
{
    /// <summary>The tier's raw (engine-side) dtype for a compute dtype.</summary>
    public static KvDtype Raw(ScalarType computeDtype) => computeDtype switch
    {
        ScalarType.Float32 => KvDtype.Float32,
        ScalarType.BFloat16 => KvDtype.BFloat16,
        ScalarType.Float16 => KvDtype.Float16,
        _ => throw new ArgumentException($"the KV tier cannot store KV of {computeDtype}; use --dtype float32, bfloat16 or float16."),
    };

    /// <summary>The stored dtype for <c>--kv-store-dtype</c> (auto or float16) and a compute dtype.</summary>
    public static KvDtype Store(ScalarType computeDtype, string storeDtype)
    {
        var raw = Raw(computeDtype);
        if (storeDtype.ToLowerInvariant() is not ("float16" or "fp16")) return raw;
        if (raw == KvDtype.BFloat16)
            throw new ArgumentException("--kv-store-dtype float16 only applies to a float32 engine; this engine computes in bfloat16, whose blocks are already stored at 2 bytes per element: use --kv-store-dtype auto.");
        return KvDtype.Float16;
    }

    /// <summary>The same check for configuration validation, on the dtype names; null when valid.</summary>
    public static string? Validate(string computeDtype, string storeDtype)
    {
        try
        {
            Store(TorchDtypes.Parse(computeDtype), storeDtype);
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
    }
}
