// The int8 weight format (--quantization int8): symmetric, one scale per block of 32 consecutive
// weights along the input dimension, the same block layout as llama.cpp's Q8_0. Each row of an
// [outFeatures, inFeatures] matrix is inFeatures / 32 blocks of 34 bytes:
//   [fp16 scale d][32 x int8 q]      weight ~ q * d,  d = max|w| / 127,  q = round(w / d)
// so a decode step reads 34 / 32 = 1.0625 bytes per weight (bf16: 2, fp32: 4).
//
// The scale is stored as fp16 (not fp32: 36 bytes per block would be 1.125 bytes per weight) and
// rounded UP to the next fp16 value, so |w / d| <= 127 always and every weight is within d / 2 of
// q * d (no clamping). It is also never below fp16's smallest normal 2^-14: the GEMV decodes the
// scale with the same bit shift as its fp16 weights (w * 2^-112, see Gemv.Avx2.cs), which would
// make a subnormal half an fp32 subnormal, slow on x86. Only blocks with max|w| < 2^-14 * 127 (~0.008)
// feel it: their step is 2^-14 (~6e-5) instead of max|w| / 127, still well under the usual weight.
// Quantization runs on KernelThreads.Count threads, one row range per task, with a one-row fp32
// buffer per thread; the source tensor (float32, bfloat16 or float16) is read in place.
using System.Runtime.CompilerServices;
using Platform.Engine.Kernels;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Kernels;

public static unsafe class QuantizationQ8
{
    /// <summary>Weights per block (one scale each).</summary>
    public const int BlockValues = 32;

    /// <summary>Bytes per block: an fp16 scale and 32 int8 values.</summary>
    public const int BlockBytes = sizeof(ushort) + BlockValues;

    /// <summary>The smallest scale stored (fp16's smallest normal, 2^-14; see header).</summary>
    public static readonly Half MinScale = BitConverter.UInt16BitsToHalf(0x0400);

    /// <summary>True when a row of <paramref name="inFeatures"/> weights can be held in this format.</summary>
    public static bool Supports(long inFeatures) => inFeatures > 0 && inFeatures % BlockValues == 0;

    /// <summary>Bytes of one quantized row of <paramref name="inFeatures"/> weights (a multiple of 32).</summary>
    public static long RowBytes(int inFeatures)
    {
        if (!Supports(inFeatures))
            throw new ArgumentException($"int8 rows need a multiple of {BlockValues} input features, got {inFeatures}.", nameof(inFeatures));
        return (long)inFeatures / BlockValues * BlockBytes;
    }

    /// <summary>The fp16 scale of a block whose largest magnitude is <paramref name="maxAbs"/>: max/127 rounded up, at least <see cref="MinScale"/>.</summary>
    public static Half ScaleFor(float maxAbs)
    {
        if (!float.IsFinite(maxAbs))
            throw new ArgumentException("weights must be finite to be quantized.", nameof(maxAbs));
        float wanted = maxAbs / 127f;
        var scale = (Half)wanted;
        if ((float)scale < wanted)
            scale = Half.BitIncrement(scale);
        if (scale < MinScale)
            scale = MinScale;
        if (Half.IsInfinity(scale))
            throw new ArgumentException($"a weight of magnitude {maxAbs} is beyond the int8 format's fp16 scale (at most {(float)Half.MaxValue * 127f}).", nameof(maxAbs));
        return scale;
    }

    /// <summary>Quantizes one row of <paramref name="inFeatures"/> fp32 weights into <see cref="RowBytes"/> bytes at <paramref name="destination"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeRow(float* source, int inFeatures, byte* destination)
    {
        long blocks = RowBytes(inFeatures) / BlockBytes;
        for (long b = 0; b < blocks; b++)
        {
            float* w = source + b * BlockValues;
            byte* block = destination + b * BlockBytes;
            float maxAbs = 0f;
            for (int i = 0; i < BlockValues; i++)
            {
                float a = MathF.Abs(w[i]);
                if (!float.IsFinite(a))
                    throw new ArgumentException($"weight {b * BlockValues + i} of the row is {w[i]}; only finite weights can be quantized.");
                maxAbs = MathF.Max(maxAbs, a);
            }
            Half scale = ScaleFor(maxAbs);
            *(Half*)block = scale;
            float d = (float)scale;
            sbyte* q = (sbyte*)(block + sizeof(ushort));
            for (int i = 0; i < BlockValues; i++)
                q[i] = (sbyte)Math.Clamp(MathF.Round(w[i] / d), -127f, 127f);
        }
    }

    /// <summary>Writes the <paramref name="inFeatures"/> fp32 values q * d of one quantized row (exact: q has 8 bits and d 11).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DequantizeRow(byte* source, int inFeatures, float* destination)
    {
        long blocks = RowBytes(inFeatures) / BlockBytes;
        for (long b = 0; b < blocks; b++)
        {
            byte* block = source + b * BlockBytes;
            float d = (float)*(Half*)block;
            sbyte* q = (sbyte*)(block + sizeof(ushort));
            float* o = destination + b * BlockValues;
            for (int i = 0; i < BlockValues; i++)
                o[i] = q[i] * d;
        }
    }

    /// <summary>
    /// Quantizes a contiguous CPU [outFeatures, inFeatures] float32/bfloat16/float16 matrix into a new
    /// uint8 tensor [outFeatures, RowBytes(inFeatures)], on every kernel thread. The source is not disposed.
    /// </summary>
    public static Tensor Quantize(Tensor weight)
    {
        if (weight.dim() != 2 || weight.device_type != DeviceType.CPU)
            throw new ArgumentException("int8 quantization takes a 2-D CPU matrix.", nameof(weight));
        if (weight.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"int8 quantization reads float32, bfloat16 or float16 weights, not {weight.dtype}.", nameof(weight));
        int outFeatures = checked((int)weight.shape[0]);
        int inFeatures = checked((int)weight.shape[1]);
        long rowBytes = RowBytes(inFeatures);
        using var source = weight.contiguous();
        var packed = empty([outFeatures, rowBytes], ScalarType.Byte);
        byte* from = TensorPointers.Data(source);
        byte* to = TensorPointers.Data(packed);
        ScalarType type = source.dtype;
        int elementSize = TorchDtypes.ElementSize(type);
        try
        {
            ForRowRanges(outFeatures, (start, end) =>
            {
                float[] row = new float[inFeatures];
                fixed (float* wide = row)
                {
                    for (int r = start; r < end; r++)
                    {
                        WidenRow(from + (long)r * inFeatures * elementSize, type, inFeatures, wide);
                        QuantizeRow(wide, inFeatures, to + r * rowBytes);
                    }
                }
            });
        }
        catch
        {
            packed.Dispose();
            throw;
        }
        return packed;
    }

    /// <summary>Dequantizes rows [startRow, startRow + rows) of a packed matrix into a contiguous fp32 buffer, on every kernel thread.</summary>
    public static void DequantizeRows(byte* packed, int inFeatures, int startRow, int rows, float* destination)
    {
        long rowBytes = RowBytes(inFeatures);
        ForRowRanges(rows, (start, end) =>
        {
            for (int r = start; r < end; r++)
                DequantizeRow(packed + (startRow + (long)r) * rowBytes, inFeatures, destination + (long)r * inFeatures);
        });
    }

    /// <summary>Runs body over [0, rows) cut into ranges of whole rows, four per kernel thread (unwrapping a single exception).</summary>
    private static void ForRowRanges(int rows, Action<int, int> body)
    {
        int threads = KernelThreads.Count;
        int ranges = Math.Min(rows, 4 * threads);
        if (ranges <= 1)
        {
            body(0, rows);
            return;
        }
        try
        {
            Parallel.For(0, ranges, new ParallelOptions { MaxDegreeOfParallelism = threads },
                i => body((int)((long)rows * i / ranges), (int)((long)rows * (i + 1) / ranges)));
        }
        catch (AggregateException e) when (e.InnerExceptions.Count >= 1)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
            throw;
        }
    }

    private static void WidenRow(byte* source, ScalarType type, int count, float* destination)
    {
        switch (type)
        {
            case ScalarType.Float32:
                new ReadOnlySpan<float>(source, count).CopyTo(new Span<float>(destination, count));
                break;
            case ScalarType.BFloat16:
                for (int i = 0; i < count; i++)
                    destination[i] = Gemv.WidenBFloat16(((ushort*)source)[i]);
                break;
            default:
                for (int i = 0; i < count; i++)
                    destination[i] = (float)((Half*)source)[i];
                break;
        }
    }
}
