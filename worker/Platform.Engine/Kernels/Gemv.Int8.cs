// int8 weights for Gemv (--quantization int8): rows in QuantizationQ8's format, 34-byte blocks of
// an fp16 scale and 32 int8 values, so a decode step reads 1.0625 bytes per weight instead of 2 (bf16).
// Q8Loader is one more IRowLoader, so the AVX2 and AVX-512 kernels (and their tiles) run it as
// they run fp32/fp16/bf16: each 8 or 16 weights are sign-extended (vpmovsxbd), converted to fp32
// (vcvtdq2ps) and multiplied by their block's scale, then FMA'd into fp32 sums per batch row.
//
// Where the scale is applied: per loaded vector, in the loader. The alternative, folding it once per
// 32-block (dot the raw int8 values into a block sum, then sum += blockSum * d), saves one multiply
// per vector at batch 1 but costs one extra FMA per block per batch row, i.e. more work for batch > 2,
// and cannot be expressed through IRowLoader (which the 2-64 row GEMM also runs over). At batch 1
// the kernel is memory-bound (bench `weights`), so the per-vector multiply is free there.
// The scale is decoded with the fp16 kernel's shift (bits << 13 = d * 2^-112, exact for normal
// halves; the quantizer never stores a subnormal scale) and the caller pre-scales the inputs and the
// sums by 2^56 each, exactly as MatVecF16 does: q * (d * 2^-112) is exact in fp32 (8 + 11 bits).
// The portable path dequantizes a row into fp32 (QuantizationQ8.DequantizeRow) and reuses the fp32 dot.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    /// <summary>
    /// As <see cref="MatVecF32"/> with int8 weights in <see cref="QuantizationQ8"/>'s format: <paramref name="weight"/>
    /// holds <paramref name="outFeatures"/> rows of <see cref="QuantizationQ8.RowBytes"/> bytes; inFeatures must be a
    /// multiple of 32. Computes with the dequantized weights q * d in fp32 (products and sums fp32). Inputs must stay
    /// below 2^72 in magnitude (see <see cref="MatVecF16"/>).
    /// </summary>
    public static void MatVecQ8(byte* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewJob(weight, outFeatures, inFeatures, input, batch, output, bias);
        if (!QuantizationQ8.Supports(inFeatures))
            throw new ArgumentException($"int8 weights need inFeatures to be a multiple of {QuantizationQ8.BlockValues}, got {inFeatures}.", nameof(inFeatures));
        // Chunks are sized by the rows' real bytes (values and scales): without them the whole matrix would look
        // smaller than the parallel threshold and run on one thread.
        long rowBytes = Q8Loader.RowBytes(inFeatures);
        if (!IsAccelerated)
        {
            Dispatch(ref job, rowBytes, &ChunkQ8Portable);
            return;
        }
        DispatchScaled(ref job, rowBytes, ActivePath == GemvPath.Vector512 ? &ChunkQ8Avx512 : &ChunkQ8Avx2);
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
