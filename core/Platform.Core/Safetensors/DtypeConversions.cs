// Conversions between float32 and the 16-bit formats of checkpoints. bfloat16 is
// the top half of a float32, rounded to nearest even (NaN kept quiet).
namespace Platform.Core.Safetensors;

public static class DtypeConversions
{
    public static ushort FloatToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    public static float BFloat16ToFloat(ushort value) => BitConverter.UInt32BitsToSingle((uint)value << 16);
}
