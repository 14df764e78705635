// int8 weights for Gemv (--quantization int8): rows in QuantizationQ8's format, 34-byte blocks of
// an fp16 scale and 32 int8 values, so a decode step reads 1.0625 bytes per weight instead of 2 (bf16).
//
// MatVecQ8 (batch 1..15, the decode path) quantizes the activations per 32-block too and takes exact
// integer dot products per block (Gemv.Q8Dot.cs, Q8Activations.cs); its results therefore carry the
// activations' rounding (each input within dx / 2 of its int8 value) besides the weights'.
//
// Q8Loader is the widening form, one more IRowLoader: each 8 or 16 weights are sign-extended
// (vpmovsxbd), converted to fp32 (vcvtdq2ps) and multiplied by their block's scale, then FMA'd into
// fp32 sums against fp32 activations. It stays because Gemm.MultiplyQ8 (16-64 rows) packs its tiles
// through it; MatVecQ8Widening runs it through the GEMV tiles for the bench's old-vs-new int8 row.
// The scale is decoded with the fp16 kernel's shift (bits << 13 = d * 2^-112, exact for normal
// halves; the quantizer never stores a subnormal scale) and the caller pre-scales the inputs and the
// sums by 2^56 each, exactly as MatVecF16 does: q * (d * 2^-112) is exact in fp32 (8 + 11 bits).
// The portable widening path dequantizes a row into fp32 (QuantizationQ8.DequantizeRow) and reuses the fp32 dot.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    /// <summary>
    /// As <see cref="MatVecF32"/> with int8 weights in <see cref="QuantizationQ8"/>'s format: <paramref name="weight"/>
    /// holds <paramref name="outFeatures"/> rows of <see cref="QuantizationQ8.RowBytes"/> bytes; inFeatures must be a
    /// multiple of 32. The inputs are quantized to int8 per 32-block (<see cref="Q8Activations"/>) and each block is an
    /// exact integer dot, scaled and summed in fp32 (see Gemv.Q8Dot.cs). Inputs must stay below 2^72 in magnitude.
    /// </summary>
    public static void MatVecQ8(byte* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewQ8Job(weight, outFeatures, inFeatures, input, batch, output, bias);
        // Chunks are sized by the rows' real bytes (values and scales): without them the whole matrix would look
        // smaller than the parallel threshold and run on one thread.
        DispatchQ8Dot(ref job, Q8Loader.RowBytes(inFeatures));
    }

    /// <summary>
    /// The widening int8 GEMV (fp32 activations, weights q * d widened in registers through <see cref="Q8Loader"/>), as
    /// MatVecQ8 ran before the integer-dot kernels; kept for the bench's comparison (bench kernels, "int8" rows).
    /// </summary>
    internal static void MatVecQ8Widening(byte* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewQ8Job(weight, outFeatures, inFeatures, input, batch, output, bias);
        long rowBytes = Q8Loader.RowBytes(inFeatures);
        if (!IsAccelerated)
        {
            Dispatch(ref job, rowBytes, &ChunkQ8Portable);
            return;
        }
        DispatchScaled(ref job, rowBytes, ActivePath == GemvPath.Vector512 ? &ChunkQ8Avx512 : &ChunkQ8Avx2);
    }

    private static Job NewQ8Job(byte* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias)
    {
        var job = NewJob(weight, outFeatures, inFeatures, input, batch, output, bias);
        if (!QuantizationQ8.Supports(inFeatures))
            throw new ArgumentException($"int8 weights need inFeatures to be a multiple of {QuantizationQ8.BlockValues}, got {inFeatures}.", nameof(inFeatures));
        return job;
    }

    private static void ChunkQ8Avx2(void* job, int chunk) => ChunkAvx2<Q8Loader>((Job*)job, chunk);

    private static void ChunkQ8Avx512(void* job, int chunk) => ChunkAvx512<Q8Loader>((Job*)job, chunk);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkQ8Portable(void* p, int chunk)
    {
        var job = (Job*)p;
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        long rowBytes = QuantizationQ8.RowBytes(k);
        byte* weight = (byte*)job->Weight;
        float[] buffer = _rowBuffer is { } b && b.Length >= k ? b : (_rowBuffer = new float[k]);
        fixed (float* row32 = buffer)
        {
            for (int row = start; row < end; row++)
            {
                QuantizationQ8.DequantizeRow(weight + row * rowBytes, k, row32);
                PortableRow(job, row, new ReadOnlySpan<float>(row32, k));
            }
        }
    }

    /// <summary>int8 weights times their block's scale, as fp32 times 2^-112 (see header). k is a multiple of 8 (16 for Load512).</summary>
    internal readonly struct Q8Loader : IRowLoader
    {
        /// <summary>Bytes of int8 values per weight; the prefetch distance uses it (the 2-byte scales make it 6% short, harmless 4 KB ahead).</summary>
        public static int ElementSize => sizeof(sbyte);

        public static long RowBytes(int inFeatures) => QuantizationQ8.RowBytes(inFeatures);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static byte* Block(byte* row, int k) => row + (k >> 5) * QuantizationQ8.BlockBytes;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static float Scale(byte* block) => BitConverter.Int32BitsToSingle(*(ushort*)block << 13);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(byte* row, int k)
        {
            byte* block = Block(row, k);
            Vector256<float> values = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32((sbyte*)block + sizeof(ushort) + (k & 31)));
            return Avx.Multiply(values, Vector256.Create(Scale(block)));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(byte* row, int k)
        {
            byte* block = Block(row, k);
            Vector512<int> wide = Avx512F.ConvertToVector512Int32(Sse2.LoadVector128((sbyte*)block + sizeof(ushort) + (k & 31)));
            return Avx512F.Multiply(Avx512F.ConvertToVector512Single(wide), Vector512.Create(Scale(block)));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadScalar(byte* row, int k)
        {
            byte* block = Block(row, k);
            return ((sbyte*)block)[sizeof(ushort) + (k & 31)] * Scale(block);
        }
    }
}
