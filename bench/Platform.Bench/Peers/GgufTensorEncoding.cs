// Encodes fp32 values as the ggml tensor types the GGUF writer emits: f32, f16 (IEEE half) and q8_0.
// q8_0 (llama.cpp's 8-bit type): blocks of 32 consecutive values along a row, each stored as an fp16
// scale d = max|w| / 127 followed by 32 signed bytes q = round(w / d), so w ≈ d·q within d/2.
// A block of zeros has d = 0 and all q = 0.
using System.Buffers.Binary;

namespace Platform.Bench.Peers;

internal static class GgufTensorEncoding
{
    public const int Q8BlockSize = 32;
    /// <summary>Bytes of one q8_0 block: a 2-byte fp16 scale and 32 int8 values.</summary>
    public const int Q8BlockBytes = 2 + Q8BlockSize;

    public static byte[] Encode(ReadOnlySpan<float> values, GgmlType type) => type switch
    {
        GgmlType.F32 => EncodeF32(values),
        GgmlType.F16 => EncodeF16(values),
        GgmlType.Q8_0 => EncodeQ8_0(values),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
    };

    public static byte[] EncodeF32(ReadOnlySpan<float> values)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]);
        return bytes;
    }

    public static byte[] EncodeF16(ReadOnlySpan<float> values)
    {
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(i * 2), (Half)values[i]);
        return bytes;
    }

    public static byte[] EncodeQ8_0(ReadOnlySpan<float> values)
    {
        if (values.Length % Q8BlockSize != 0)
            throw new ArgumentException($"q8_0 encodes whole blocks of {Q8BlockSize} values, got {values.Length}");
        int blocks = values.Length / Q8BlockSize;
        var bytes = new byte[blocks * Q8BlockBytes];
        for (int b = 0; b < blocks; b++)
        {
            var block = values.Slice(b * Q8BlockSize, Q8BlockSize);
            float maxAbs = 0;
            foreach (float v in block) maxAbs = Math.Max(maxAbs, Math.Abs(v));
            float d = maxAbs / 127f;
            float inverse = d == 0 ? 0 : 1f / d;
            var output = bytes.AsSpan(b * Q8BlockBytes, Q8BlockBytes);
            BinaryPrimitives.WriteHalfLittleEndian(output, (Half)d);
            for (int i = 0; i < Q8BlockSize; i++)
                output[2 + i] = (byte)(sbyte)Math.Clamp(MathF.Round(block[i] * inverse, MidpointRounding.AwayFromZero), -127f, 127f);
        }
        return bytes;
    }
}
