// The int8 GEMV's integer-dot kernels (Gemv.MatVecQ8, batch 1..Gemm.GemvRowsLimitQ8 - 1).
// The activations are quantized once per call the way the weights are (Q8Activations: per 32-block,
// symmetric, scale dx), so each block of a weight row and an input row is an exact integer dot
// S = sum q_w * q_x, held as 8 (AVX2) or 16 (AVX-512) int32 lane partials (each < 2^24, so exact in
// fp32 too), and a row sums the scaled partials in fp32:
//   y = sum_blocks sum_lanes S_lane * (dw * dx)     (conversions exact; dw * dx a scalar fp32 product)
// i.e. one scalar multiply, one broadcast, one convert and one FMA per 32 weights and batch row, where the widening kernel
// (Q8Loader through the fp32 tiles) spent 4-8 widen/convert/multiply/FMA instructions. The same math
// as llama.cpp's q8_0 x q8_0 dot, written from its description (not its code).
//
// Per path (Gemv.Q8DotPath; every path decodes dw with the fp16 shift, d * 2^-112, see Q8Activations):
//   Vector512 (AVX-512BW): one zmm holds one block's 32 weights sign-extended to int16 (vpmovsxbw,
//     straight from memory); the activations are stored as int16, so one vpmaddwd per block and batch
//     row gives 16 exact int32 pair sums. .NET 10 exposes no AVX512-VNNI (vpdpbusd) for 512-bit
//     vectors (only AvxVnni, whose IsSupported is false on Zen 4, and Avx10v1, also false here), and
//     AVX-512BW has no vpsignb for llama.cpp's sign trick, so int16 + vpmaddwd is the cheapest exact
//     form: 2 instructions per block shared by the batch rows, 4 per block and batch row.
//   Vector256 (AVX2): int8 activations and the sign trick: |w| (vpabsb) as the unsigned operand,
//     x with w's sign (vpsignb) as the signed one, vpmaddubsw (pairs: at most 2 * 127 * 127, so no int16
//     saturation; the weights and activations never hold -128) then vpmaddwd by ones into int32.
//   Portable: scalar integer dots per block, fp32 per block as above.
// Tiles: batch 1 runs one row with two independent accumulators (blocks alternate); batch >= 3 runs
// groups of 4 batch rows (3 padded by repeating the last) sharing each decoded weight block, and a
// leftover of 1-2 rows runs the 1-row kernel per row (the weight row is then re-read from L1).
// Prefetch: the weight stream is prefetched 4 KB ahead as in the fp32 kernels (two lines per two
// blocks, 68 bytes; a few redundant hints, no missed line).
// Work split and threads: Gemv's Dispatch with the rows' real bytes (34 per 32 weights), so a large
// matrix is cut into many ~256 KB chunks; Q8DotChunksRun counts chunks run, for the test that guards
// against the matrix running as one chunk again.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    private static long _q8DotChunksRun;

    /// <summary>Chunks the int8 integer-dot GEMV has run since the process started (a test hook: a large matrix must take several).</summary>
    internal static long Q8DotChunksRun => Interlocked.Read(ref _q8DotChunksRun);

    /// <summary>The integer-dot kernel family <see cref="MatVecQ8"/> runs now: AVX-512BW, AVX2 or portable (see header).</summary>
    internal static GemvPath Q8DotPath =>
        ActivePath == GemvPath.Vector512 && Avx512BW.IsSupported ? GemvPath.Vector512 : IsAccelerated ? GemvPath.Vector256 : GemvPath.Portable;

    /// <summary>Quantizes the job's inputs (for the path that runs), points the job at them and runs the integer-dot chunks.</summary>
    private static void DispatchQ8Dot(ref Job job, long rowBytes)
    {
        GemvPath path = Q8DotPath;
        var layout = new Q8ActivationLayout(job.InFeatures, path == GemvPath.Vector512 ? sizeof(short) : sizeof(sbyte));
        // The chunks read the quantized activations through Job.Input (a byte buffer in Q8ActivationLayout, not fp32).
        job.Input = (float*)Q8Activations.Quantize(job.Input, job.Batch, job.InFeatures, layout);
        job.Scale = F16OutputScale;
        Dispatch(ref job, rowBytes, path switch
        {
            GemvPath.Vector512 => &ChunkQ8DotAvx512,
            GemvPath.Vector256 => &ChunkQ8DotAvx2,
            _ => &ChunkQ8DotPortable,
        });
    }

    private static void ChunkQ8DotAvx512(void* job, int chunk) => ChunkQ8Dot<Q8DotAvx512>((Job*)job, chunk);

    private static void ChunkQ8DotAvx2(void* job, int chunk) => ChunkQ8Dot<Q8DotAvx2>((Job*)job, chunk);

    private static void ChunkQ8DotPortable(void* job, int chunk) => ChunkQ8Dot<Q8DotPortable>((Job*)job, chunk);

    /// <summary>One path's block kernels over a weight row and 1 or 4 quantized batch rows.</summary>
    private interface IQ8DotKernel
    {
        /// <summary>Bytes per quantized activation value (1: int8, 2: int16).</summary>
        static abstract int ValueBytes { get; }

        /// <summary>sum over blocks of (S * dx) * dw for one weight row and one batch row, times 2^-56.</summary>
        static abstract float Dot1(byte* w, byte* x, float* dx, int blocks);

        /// <summary>As <see cref="Dot1"/> for four batch rows sharing each weight block; results in sums[0..3].</summary>
        static abstract void Dot4(byte* w, byte** x, float** dx, int blocks, float* sums);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkQ8Dot<TK>(Job* job, int chunk) where TK : struct, IQ8DotKernel
    {
        Interlocked.Increment(ref _q8DotChunksRun);
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        int batch = job->Batch;
        var layout = new Q8ActivationLayout(k, TK.ValueBytes);
        int blocks = layout.Blocks;
        long rowBytes = QuantizationQ8.RowBytes(k);
        byte* activations = (byte*)job->Input;
        byte* weight = (byte*)job->Weight;
        float* sums = stackalloc float[4];
        byte** x = stackalloc byte*[4];
        float** dx = stackalloc float*[4];
        int* slot = stackalloc int[4];

        for (int row = start; row < end; row++)
        {
            byte* w = weight + row * rowBytes;
            for (int b = 0; b < batch;)
            {
                int left = batch - b;
                if (left < 3)
                {
                    Store(job, row, b, TK.Dot1(w, layout.Values(activations, b), layout.Scales(activations, b), blocks));
                    b++;
                    continue;
                }
                int take = Math.Min(left, 4);
                for (int j = 0; j < 4; j++)
                {
                    slot[j] = b + Math.Min(j, take - 1);
                    x[j] = layout.Values(activations, slot[j]);
                    dx[j] = layout.Scales(activations, slot[j]);
                }
                TK.Dot4(w, x, dx, blocks, sums);
                for (int j = 0; j < take; j++)
                    Store(job, row, slot[j], sums[j]);
                b += take;
            }
        }
    }

    /// <summary>A block's fp16 weight scale as d * 2^-112 (always positive and normal: see QuantizationQ8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q8WeightScale(byte* block) => BitConverter.Int32BitsToSingle(*(ushort*)block << 13);

    private readonly struct Q8DotAvx512 : IQ8DotKernel
    {
        public static int ValueBytes => sizeof(short);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<short> Weights(byte* block) => Avx512BW.ConvertToVector512Int16(Avx.LoadVector256((sbyte*)block + sizeof(ushort)));

        /// <summary>acc + S * (dw * dx) for one block, S from 16 int32 pair sums of the int16 weights and activations.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Accumulate(Vector512<short> w, float scale, short* x, Vector512<float> acc)
        {
            Vector512<int> s = Avx512BW.MultiplyAddAdjacent(w, Avx512F.LoadAlignedVector512(x));
            return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(s), Vector512.Create(scale), acc);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static float Dot1(byte* w, byte* x, float* dx, int blocks)
        {
            const int n = QuantizationQ8.BlockValues;
            short* xs = (short*)x;
            Vector512<float> a0 = Vector512<float>.Zero, a1 = a0;
            int j = 0;
            for (; j + 2 <= blocks; j += 2)
            {
                byte* b0 = w + (long)j * QuantizationQ8.BlockBytes;
                byte* b1 = b0 + QuantizationQ8.BlockBytes;
                Prefetch(b0);
                Prefetch(b0 + 64);
                a0 = Accumulate(Weights(b0), Q8WeightScale(b0) * dx[j], xs + j * n, a0);
                a1 = Accumulate(Weights(b1), Q8WeightScale(b1) * dx[j + 1], xs + (j + 1) * n, a1);
            }
            if (j < blocks)
            {
                byte* b0 = w + (long)j * QuantizationQ8.BlockBytes;
                a0 = Accumulate(Weights(b0), Q8WeightScale(b0) * dx[j], xs + j * n, a0);
            }
            return Vector512.Sum(Avx512F.Add(a0, a1));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Dot4(byte* w, byte** x, float** dx, int blocks, float* sums)
        {
            const int n = QuantizationQ8.BlockValues;
            short* x0 = (short*)x[0], x1 = (short*)x[1], x2 = (short*)x[2], x3 = (short*)x[3];
            float* d0 = dx[0], d1 = dx[1], d2 = dx[2], d3 = dx[3];
            Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < blocks; j++)
            {
                byte* block = w + (long)j * QuantizationQ8.BlockBytes;
                Prefetch(block);
                Vector512<short> wv = Weights(block);
                float dw = Q8WeightScale(block);
                int at = j * n;
                a0 = Accumulate(wv, dw * d0[j], x0 + at, a0);
                a1 = Accumulate(wv, dw * d1[j], x1 + at, a1);
                a2 = Accumulate(wv, dw * d2[j], x2 + at, a2);
                a3 = Accumulate(wv, dw * d3[j], x3 + at, a3);
            }
            sums[0] = Vector512.Sum(a0);
            sums[1] = Vector512.Sum(a1);
            sums[2] = Vector512.Sum(a2);
            sums[3] = Vector512.Sum(a3);
        }
    }

    private readonly struct Q8DotAvx2 : IQ8DotKernel
    {
        public static int ValueBytes => sizeof(sbyte);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<sbyte> Weights(byte* block) => Avx.LoadVector256((sbyte*)block + sizeof(ushort));

        /// <summary>acc + S * (dw * dx) for one block: |w| times x with w's sign, pairs in int16 (no saturation), then int32.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<float> Accumulate(Vector256<sbyte> w, Vector256<byte> absW, float scale, sbyte* x, Vector256<float> acc)
        {
            Vector256<sbyte> signed = Avx2.Sign(Avx.LoadAlignedVector256(x), w);
            Vector256<int> s = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(absW, signed), Vector256.Create((short)1));
            return Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Vector256.Create(scale), acc);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static float Dot1(byte* w, byte* x, float* dx, int blocks)
        {
            const int n = QuantizationQ8.BlockValues;
            sbyte* xs = (sbyte*)x;
            Vector256<float> a0 = Vector256<float>.Zero, a1 = a0;
            int j = 0;
            for (; j + 2 <= blocks; j += 2)
            {
                byte* b0 = w + (long)j * QuantizationQ8.BlockBytes;
                byte* b1 = b0 + QuantizationQ8.BlockBytes;
                Prefetch(b0);
                Prefetch(b0 + 64);
                Vector256<sbyte> w0 = Weights(b0), w1 = Weights(b1);
                a0 = Accumulate(w0, Avx2.Abs(w0), Q8WeightScale(b0) * dx[j], xs + j * n, a0);
                a1 = Accumulate(w1, Avx2.Abs(w1), Q8WeightScale(b1) * dx[j + 1], xs + (j + 1) * n, a1);
            }
            if (j < blocks)
            {
                byte* b0 = w + (long)j * QuantizationQ8.BlockBytes;
                Vector256<sbyte> w0 = Weights(b0);
                a0 = Accumulate(w0, Avx2.Abs(w0), Q8WeightScale(b0) * dx[j], xs + j * n, a0);
            }
            return Vector256.Sum(Avx.Add(a0, a1));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static void Dot4(byte* w, byte** x, float** dx, int blocks, float* sums)
        {
            const int n = QuantizationQ8.BlockValues;
            sbyte* x0 = (sbyte*)x[0], x1 = (sbyte*)x[1], x2 = (sbyte*)x[2], x3 = (sbyte*)x[3];
            float* d0 = dx[0], d1 = dx[1], d2 = dx[2], d3 = dx[3];
            Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < blocks; j++)
            {
                byte* block = w + (long)j * QuantizationQ8.BlockBytes;
                Prefetch(block);
                Vector256<sbyte> wv = Weights(block);
                Vector256<byte> absW = Avx2.Abs(wv);
                float dw = Q8WeightScale(block);
                int at = j * n;
                a0 = Accumulate(wv, absW, dw * d0[j], x0 + at, a0);
                a1 = Accumulate(wv, absW, dw * d1[j], x1 + at, a1);
                a2 = Accumulate(wv, absW, dw * d2[j], x2 + at, a2);
                a3 = Accumulate(wv, absW, dw * d3[j], x3 + at, a3);
            }
            sums[0] = Vector256.Sum(a0);
            sums[1] = Vector256.Sum(a1);
            sums[2] = Vector256.Sum(a2);
            sums[3] = Vector256.Sum(a3);
        }
    }

    private readonly struct Q8DotPortable : IQ8DotKernel
    {
        public static int ValueBytes => sizeof(sbyte);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static float Dot1(byte* w, byte* x, float* dx, int blocks)
        {
            const int n = QuantizationQ8.BlockValues;
            float sum = 0f;
            for (int j = 0; j < blocks; j++)
            {
                byte* block = w + (long)j * QuantizationQ8.BlockBytes;
                sbyte* q = (sbyte*)block + sizeof(ushort);
                sbyte* xs = (sbyte*)x + j * n;
                int s = 0;
                for (int i = 0; i < n; i++)
                    s += q[i] * xs[i];
                sum += s * (Q8WeightScale(block) * dx[j]);
            }
            return sum;
        }

        public static void Dot4(byte* w, byte** x, float** dx, int blocks, float* sums)
        {
            for (int r = 0; r < 4; r++)
                sums[r] = Dot1(w, x[r], dx[r], blocks);
        }
    }
}
