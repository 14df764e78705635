// The int8 GEMV's activation side: before the integer-dot kernels (Gemv.Q8Dot.cs) run, every input
// row is quantized once per call, on the calling thread, the way the weights are: per block of 32
// consecutive values, symmetric, dx = max|x| / 127 and q = round-to-nearest-even(x * 127 / max|x|),
// so |q| <= 127 and every value is within dx / 2 (plus fp32 rounding) of q * dx. A block of zeros
// gets dx = 0; a block holding inf or NaN gets dx = NaN and q = 0, so the outputs it feeds are NaN
// (as the fp32 GEMV's would be) instead of silently finite.
//
// dx is kept in fp32 (llama.cpp's q8_0 activations round it to fp16; fp32 costs nothing here) and
// stored times 2^56: the kernels decode the weights' fp16 scale with the fp16 kernel's shift
// (d * 2^-112, see Gemv.Avx2.cs), so (dx * 2^56) * (d * 2^-112) leaves the sums at 2^-56 and the
// GEMV's output scale 2^56 (Gemv.F16OutputScale) restores them; both steps are exact powers of two.
// As for MatVecF16, inputs must stay below 2^72 in magnitude.
//
// Layout, one record per batch row, each part 64-byte aligned:
//   [k quantized values: int8 (AVX2 and portable kernels) or int16 (AVX-512 kernel, see Gemv.Q8Dot.cs)]
//   [k / 32 fp32 scales dx * 2^56]
// in a per-thread pinned buffer that only grows (no allocation per call once warm). The quantizer
// runs 8 fp32 lanes at a time through Vector256 (hardware-accelerated wherever the int8 GEMV's
// accelerated paths run) and in scalar code otherwise; both round the same fp32 products the same way.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Platform.Engine.Kernels;

/// <summary>Where one batch row's quantized values and block scales live in a <see cref="Q8Activations"/> buffer.</summary>
internal readonly unsafe struct Q8ActivationLayout
{
    public Q8ActivationLayout(int inFeatures, int valueBytes)
    {
        ValueBytes = valueBytes;
        Blocks = inFeatures / QuantizationQ8.BlockValues;
        ValuesBytes = Align((long)inFeatures * valueBytes);
        RowStride = ValuesBytes + Align((long)Blocks * sizeof(float));
    }

    /// <summary>1 (int8 values) or 2 (int16 values).</summary>
    public int ValueBytes { get; }

    /// <summary>Blocks of 32 values per row.</summary>
    public int Blocks { get; }

    /// <summary>Bytes of one row's values, rounded up to 64.</summary>
    public long ValuesBytes { get; }

    /// <summary>Bytes of one row's record (values, then scales).</summary>
    public long RowStride { get; }

    /// <summary>Row <paramref name="row"/>'s quantized values.</summary>
    public byte* Values(byte* buffer, int row) => buffer + row * RowStride;

    /// <summary>Row <paramref name="row"/>'s block scales, dx * 2^56.</summary>
    public float* Scales(byte* buffer, int row) => (float*)(buffer + row * RowStride + ValuesBytes);

    private static long Align(long bytes) => (bytes + 63) & ~63L;
}

internal static unsafe class Q8Activations
{
    /// <summary>The power of two the stored scales carry (see header).</summary>
    internal const float StoredScale = Gemv.F16InputScale;

    [ThreadStatic]
    private static byte[]? _buffer;

    /// <summary>
    /// Quantizes <paramref name="batch"/> rows of <paramref name="inFeatures"/> fp32 values (a multiple of 32) into this
    /// thread's buffer, laid out as <paramref name="layout"/> says, and returns the buffer's 64-byte-aligned start. The
    /// buffer is reused by the next call on this thread.
    /// </summary>
    public static byte* Quantize(float* input, int batch, int inFeatures, Q8ActivationLayout layout)
    {
        byte* buffer = Buffer(layout.RowStride * batch);
        for (int b = 0; b < batch; b++)
            QuantizeRow(input + (long)b * inFeatures, layout.Blocks, layout.Values(buffer, b), layout.ValueBytes, layout.Scales(buffer, b));
        return buffer;
    }

    /// <summary>Quantizes one row of <paramref name="blocks"/> blocks into int8 (valueBytes 1) or int16 (2) values and stored scales.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeRow(float* x, int blocks, byte* values, int valueBytes, float* scales)
    {
        const int n = QuantizationQ8.BlockValues;
        for (int j = 0; j < blocks; j++)
        {
            float* block = x + (long)j * n;
            float maxAbs;
            if (Vector256.IsHardwareAccelerated)
            {
                Vector256<float> v0 = Vector256.Load(block), v1 = Vector256.Load(block + 8);
                Vector256<float> v2 = Vector256.Load(block + 16), v3 = Vector256.Load(block + 24);
                Vector256<float> m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                maxAbs = 0f;
                for (int i = 0; i < Vector256<float>.Count; i++)
                    maxAbs = MathF.Max(maxAbs, m.GetElement(i));
                float inverse = Inverse(maxAbs, out scales[j]);
                Vector256<float> s = Vector256.Create(inverse);
                Vector256<int> q0 = Vector256.ConvertToInt32Native(Vector256.Round(v0 * s)), q1 = Vector256.ConvertToInt32Native(Vector256.Round(v1 * s));
                Vector256<int> q2 = Vector256.ConvertToInt32Native(Vector256.Round(v2 * s)), q3 = Vector256.ConvertToInt32Native(Vector256.Round(v3 * s));
                if (valueBytes == sizeof(short))
                {
                    short* to = (short*)values + (long)j * n;
                    Vector256.Narrow(q0, q1).Store(to);
                    Vector256.Narrow(q2, q3).Store(to + 16);
                }
                else
                {
                    Vector256.Narrow(Vector256.Narrow(q0, q1), Vector256.Narrow(q2, q3)).Store((sbyte*)values + (long)j * n);
                }
                continue;
            }
            maxAbs = 0f;
            for (int i = 0; i < n; i++)
                maxAbs = MathF.Max(maxAbs, MathF.Abs(block[i]));
            float scalarInverse = Inverse(maxAbs, out scales[j]);
            for (int i = 0; i < n; i++)
            {
                int q = (int)MathF.Round(block[i] * scalarInverse);
                if (valueBytes == sizeof(short))
                    ((short*)values)[(long)j * n + i] = (short)q;
                else
                    ((sbyte*)values)[(long)j * n + i] = (sbyte)q;
            }
        }
    }

    /// <summary>127 / maxAbs (0 for a zero block, 0 for a non-finite one) and the stored scale (maxAbs / 127) * 2^56, NaN if non-finite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Inverse(float maxAbs, out float storedScale)
    {
        if (!float.IsFinite(maxAbs))
        {
            storedScale = float.NaN;
            return 0f;
        }
        storedScale = maxAbs / 127f * StoredScale;
        return maxAbs > 0f ? 127f / maxAbs : 0f;
    }

    private static byte* Buffer(long bytes)
    {
        byte[]? buffer = _buffer;
        if (buffer is null || buffer.LongLength < bytes + 64)
        {
            buffer = GC.AllocateUninitializedArray<byte>(checked((int)Math.Max(bytes + 64, 64 * 1024)), pinned: true);
            _buffer = buffer;
        }
        // Pinned (POH) arrays never move, so the aligned address stays valid for the buffer's lifetime.
        nint start = (nint)Unsafe.AsPointer(ref buffer[0]);
        return (byte*)((start + 63) & ~(nint)63);
    }
}
