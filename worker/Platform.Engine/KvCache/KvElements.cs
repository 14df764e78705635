// Conversions between float32 rows and KV pool elements of the compute dtype
// (float32, bfloat16, float16), for the few places that touch pool memory from
// C#: DistAttention's creditor writing a debtor's K/V rows and the float32
// attention kernel reading bfloat16/float16 pools. bfloat16 rounds to nearest
// even (as libtorch does), so a value that came from a bfloat16 tensor
// round-trips exactly.
using Platform.Core.Safetensors;
using static TorchSharp.torch;

namespace Platform.Engine.KvCache;

internal static unsafe class KvElements
{
    public static void FromFloat(ReadOnlySpan<float> source, byte* destination, ScalarType dtype)
    {
        switch (dtype)
        {
            case ScalarType.Float32:
                source.CopyTo(new Span<float>(destination, source.Length));
                break;
            case ScalarType.BFloat16:
                var b = (ushort*)destination;
                for (int i = 0; i < source.Length; i++) b[i] = DtypeConversions.FloatToBFloat16(source[i]);
                break;
            case ScalarType.Float16:
                var h = (Half*)destination;
                for (int i = 0; i < source.Length; i++) h[i] = (Half)source[i];
                break;
            default:
                throw new ArgumentException($"KV pools of {dtype} are not supported; use float32, bfloat16 or float16.");
        }
    }

    public static void ToFloat(byte* source, Span<float> destination, ScalarType dtype)
    {
        switch (dtype)
        {
            case ScalarType.Float32:
                new ReadOnlySpan<float>(source, destination.Length).CopyTo(destination);
                break;
            case ScalarType.BFloat16:
                var b = (ushort*)source;
                for (int i = 0; i < destination.Length; i++) destination[i] = DtypeConversions.BFloat16ToFloat(b[i]);
                break;
            case ScalarType.Float16:
                var h = (Half*)source;
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)h[i];
                break;
            default:
                throw new ArgumentException($"KV pools of {dtype} are not supported; use float32, bfloat16 or float16.");
        }
    }
}
