// AVX2 + FMA inner kernels for Gemv, shared by fp32, fp16 and bf16 weights through a static-abstract
// "row loader" type parameter (the JIT specialises and inlines each instantiation). The loaders
// also serve the AVX-512 kernels (Gemv.Avx512.cs). bf16 widens by zero-extend + shift left 16
// (vpmovzxwd, vpslld): exact, two ops per 8 weights.
//
// Access pattern: each thread walks its chunk one weight row at a time, i.e. one sequential
// stream per core. Tiles of several rows (4 x 1, 2 x 4, reading 2-4 interleaved row streams)
// save input loads but were measured slower from DRAM on this VM: batch 1 fp16 reached 26-33 GB/s
// with 4 row streams vs 41-49 GB/s with one (32000 x 2048, 2 threads, alternating runs). The
// hardware prefetcher does not cross 4 KB pages and a 2048-wide fp16 row is exactly one page, so
// every extra stream pays its own ramp-up.
// Every kernel also issues one software prefetch (into L2, see Prefetch) per 64 bytes of weights, 4 KB ahead of the
// read position (rows of a chunk are contiguous, so that runs into the next row, as wanted).
// Alternating runs, 2 threads, best of each (the VM's bandwidth swings 2x from run to run):
// batch 8 fp32 34 vs 18 GB/s (2048 x 5632), batch 4 fp32 43 vs 27, batch 2 fp16 41-42 vs 18-19,
// batch 1 fp16 (2048 x 5632) best 52 vs 38 (weak: 1 of 3 runs was lower); fp32 batch 1 and
// 5632 x 2048 batch 1 unchanged within the noise. 8 KB ahead measured the same as 4 KB;
// 0.5-2 KB did not help batch 1.
// Register tiling within the row (16 ymm registers): each weight vector is loaded (and for fp16
// decoded) once and multiplied into one accumulator per batch row, with 8 independent FMA chains
// where the batch allows (FMA latency 4 x 2 ports):
//   batch 1   : 1 x 1, k unrolled 4x  -> 4 chains (memory-bound anyway: 90+ GB/s fp32 per core in L1/L2)
//   batch 2   : 1 x 2, k unrolled 4x  -> 8 chains (32000 x 2048 from DRAM: 32-40 GB/s fp32 vs 20-30
//               for 2 x 2; 2048 x 5632 within the noise)
//   batch 3-4 : 2 x 4 (two rows, batch 3 padded with a duplicate row) -> 8 chains. The exception
//               to one stream: 1 x 4 needs 10 loads per 8 FMAs and was load-bound (32 vs 57 GB/s
//               fp32 per core in cache), and 2 x 4 was also faster from DRAM (25 vs 22 GB/s fp32,
//               18.5 vs 15.5 fp16, 32000 x 2048, 2 threads).
//   batch > 4 : 1 x 8 tiles (5-7 padded) -> 8 chains; a remainder of 3-4 as 1 x 4 (k unrolled 2x),
//               2 as 1 x 2, 1 as 1 x 1. The row is re-read from L1 only for batch > 8.
//               Measured against 2 x 4 tiles (which decode each weight twice for batch 8):
//               1.3-1.8x faster fp32, 1.7-2.2x fp16 (128 x 2048 and 128 x 5632, one core, in cache).
// Padding computes a duplicate of the last real batch row and writes it to the same place twice,
// which is harmless and avoids separate edge kernels. inFeatures % 8 != 0 is finished with scalar
// code. Arithmetic ceiling: batch b needs b FMAs per 8 weights; at 2 FMA/cycle/core, two cores
// cannot keep up with ~70 GB/s of fp32 weights beyond batch ~4-6, so batch 8 is compute-bound
// (measured 28-35 GB/s fp32, ~19 GB/s fp16 at batch 8 with a 48-75 GB/s streaming probe)
// until AVX-512 is allowed.
//
// fp16 decode without F16C (.NET 10 exposes no vcvtph2ps for 256-bit vectors outside AVX-512/AVX10):
// sign-extend the 16-bit pattern to 32 bits (vpmovsxwd, straight from memory), shift left 13 and
// clear bits 28-30. That leaves sign in bit 31, the 5-bit exponent and 10-bit mantissa at the fp32
// positions, i.e. exactly w * 2^-112 for every finite half, subnormals included (a half subnormal
// becomes an fp32 subnormal with the same significand). The 2^112 is not multiplied back per
// vector: the caller pre-scales the inputs by 2^56 and the sums by 2^56 (exact powers of two; no
// overflow unless |input| > 2^72). Three ALU ops per 8 weights plus the FMA(s).
// Half inf/NaN (exponent 31) are NOT special-cased: they decode as finite values of magnitude
// 2^16..2^17. Mapping them to fp32 inf/NaN (and + compare + and + or per vector) measured 1.8x
// slower at batch 1 (31 vs 56 GB/s on one core, in cache), i.e. it would make fp16 decode
// compute-bound; a checkpoint with non-finite weights is broken anyway, so the loader checks once
// with Gemv.AllFinite and the hot loop assumes finite weights.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    internal interface IRowLoader
    {
        static abstract int ElementSize { get; }

        /// <summary>Bytes of one weight row of <paramref name="inFeatures"/> weights; every row address is computed through it.</summary>
        static abstract long RowBytes(int inFeatures);

        /// <summary>8 weights starting at element k, as fp32 (times the loader's fixed scale).</summary>
        static abstract Vector256<float> Load(byte* row, int k);

        /// <summary>16 weights starting at element k, as fp32 (same scale); AVX-512 only.</summary>
        static abstract Vector512<float> Load512(byte* row, int k);

        /// <summary>One weight, same scale as <see cref="Load"/>.</summary>
        static abstract float LoadScalar(byte* row, int k);
    }

    internal readonly struct F32Loader : IRowLoader
    {
        public static int ElementSize => sizeof(float);

        public static long RowBytes(int inFeatures) => (long)inFeatures * sizeof(float);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(byte* row, int k) => Avx.LoadVector256((float*)row + k);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(byte* row, int k) => Avx512F.LoadVector512((float*)row + k);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadScalar(byte* row, int k) => ((float*)row)[k];
    }

    /// <summary>fp16 weights decoded to w * 2^-112 (see header).</summary>
    internal readonly struct F16Loader : IRowLoader
    {
        public static int ElementSize => sizeof(short);

        public static long RowBytes(int inFeatures) => (long)inFeatures * sizeof(short);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(byte* row, int k)
        {
            Vector256<int> bits = Avx2.ConvertToVector256Int32((short*)row + k);
            bits = Avx2.And(Avx2.ShiftLeftLogical(bits, 13), Vector256.Create(unchecked((int)0x8FFF_FFFF)));
            return bits.AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(byte* row, int k)
        {
            Vector512<int> bits = Avx512F.ConvertToVector512Int32(Avx.LoadVector256((short*)row + k));
            bits = Avx512F.And(Avx512F.ShiftLeftLogical(bits, 13), Vector512.Create(unchecked((int)0x8FFF_FFFF)));
            return bits.AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadScalar(byte* row, int k) => DecodeHalfScaled(((short*)row)[k]);
    }

    /// <summary>bf16 weights: the 16 bits are the upper half of the fp32 value, so a zero-extend and a 16-bit shift widen them exactly.</summary>
    internal readonly struct BF16Loader : IRowLoader
    {
        public static int ElementSize => sizeof(ushort);

        public static long RowBytes(int inFeatures) => (long)inFeatures * sizeof(ushort);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(byte* row, int k) =>
            Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)row + k), 16).AsSingle();

        // The AND changes no bit (the shift already cleared the low 16), yet on the AMD EPYC CI machines it made the
        // AVX-512 bf16 GEMV stream from DRAM as fast as the f16 one (which has an AND in the same place): 32000x2048,
        // batch 1, 2 threads, the same run: 4.1-5.2 ms against 5.8-6.3 ms without it (f16 4.1-4.9 ms in all runs),
        // the kernel's speed following the kernel, not the buffer (each run on the other's weights). From cache both
        // forms ran alike. Measured, not understood: keep it unless a bench says otherwise.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(byte* row, int k) =>
            Avx512F.And(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256((short*)row + k)), 16), Vector512.Create(unchecked((int)0xFFFF_0000))).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadScalar(byte* row, int k) => WidenBFloat16(((ushort*)row)[k]);
    }

    /// <summary>bf16 bits to the fp32 value they are the upper half of (exact).</summary>
    internal static float WidenBFloat16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Scalar twin of <see cref="F16Loader.Load"/>: half bits to w * 2^-112 as fp32.</summary>
    internal static float DecodeHalfScaled(short half)
    {
        int bits = (half << 13) & unchecked((int)0x8FFF_FFFF);
        return BitConverter.Int32BitsToSingle(bits);
    }

    /// <summary>How far ahead of the weight being read the kernels prefetch (see header).</summary>
    private const int PrefetchBytes = 4096;

    /// <summary>
    /// Software prefetch of the weight stream (never faults, so running past the matrix end is harmless).
    /// Not into L1 with a temporal hint: the weights stream through once, and in L1 they evicted the input row,
    /// which a long row (down's 5632 floats, 22 KB of a 32 KB L1) then re-read from L2 for every 8 weights
    /// (bench kernels, batch 1: bf16 2048x5632 910 -> 655-737 us with the prefetch into L2). On AMD cores the
    /// non-temporal hint streams faster still: an AMD EPYC with AVX-512 (2026-12-04, bench kernels, batch 1,
    /// both orders) read 1.07-1.32x the GB/s of the L2 prefetch on every width (fp32 50-54 -> 61-66 GB/s, bf16
    /// 42-51 -> 55-58, int8 50-56 -> 56-65), and batches 4-16 and the GEMM's pack moved the same way or not at
    /// all. Elsewhere (not measured) it stays the L2 prefetch: on Intel cores the non-temporal hint fills L1, the
    /// case above.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Prefetch(byte* current)
    {
        if (StreamingPrefetch) Sse.PrefetchNonTemporal(current + PrefetchBytes);
        else Sse.Prefetch1(current + PrefetchBytes);
    }

    /// <summary>Whether <see cref="Prefetch"/> uses the non-temporal hint (AMD cores, see there).</summary>
    internal static readonly bool StreamingPrefetch = CpuModel.IsAmd;

    private static void ChunkF32Avx2(void* job, int chunk) => ChunkAvx2<F32Loader>((Job*)job, chunk);

    private static void ChunkF16Avx2(void* job, int chunk) => ChunkAvx2<F16Loader>((Job*)job, chunk);

    private static void ChunkBF16Avx2(void* job, int chunk) => ChunkAvx2<BF16Loader>((Job*)job, chunk);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkAvx2<TL>(Job* job, int chunk) where TL : struct, IRowLoader
    {
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        int batch = job->Batch;
        long rowBytes = TL.RowBytes(k);
        byte* weight = (byte*)job->Weight;
        float* input = job->Input;
        float* sums = stackalloc float[8];
        float** x = stackalloc float*[8];
        int* slot = stackalloc int[8];
        // The vector loop starts at the rows' first 64-byte boundary (see AlignedHead); kv weights remain.
        int head = AlignedHead<TL>(weight, rowBytes, k), kv = k - head;
        long skip = head * TL.ElementSize;

        if (batch == 1)
        {
            for (int row = start; row < end; row++)
            {
                byte* w = weight + row * rowBytes;
                Store(job, row, 0, Dot1x1<TL>(w + skip, input + head, kv) + HeadDot<TL>(w, input, head));
            }
            return;
        }

        if (batch is 3 or 4)
        {
            // Two rows at a time: 6 loads per 8 FMAs instead of 10 (see header).
            int b3 = batch - 1; // batch 3 duplicates its last row into the 4th slot
            float* x0 = input, x1 = input + k, x2 = input + 2L * k, x3 = input + (long)b3 * k;
            for (int row = start; row < end; row += 2)
            {
                int r1 = Math.Min(row + 1, end - 1);
                byte* w0 = weight + row * rowBytes, w1 = weight + r1 * rowBytes;
                Dot2x4<TL>(w0 + skip, w1 + skip, x0 + head, x1 + head, x2 + head, x3 + head, kv, sums);
                Store(job, row, 0, sums[0] + HeadDot<TL>(w0, x0, head));
                Store(job, row, 1, sums[1] + HeadDot<TL>(w0, x1, head));
                Store(job, row, 2, sums[2] + HeadDot<TL>(w0, x2, head));
                Store(job, row, b3, sums[3] + HeadDot<TL>(w0, x3, head));
                Store(job, r1, 0, sums[4] + HeadDot<TL>(w1, x0, head));
                Store(job, r1, 1, sums[5] + HeadDot<TL>(w1, x1, head));
                Store(job, r1, 2, sums[6] + HeadDot<TL>(w1, x2, head));
                Store(job, r1, b3, sums[7] + HeadDot<TL>(w1, x3, head));
            }
            return;
        }

        for (int row = start; row < end; row++)
        {
            byte* w = weight + row * rowBytes, wv = w + skip;
            for (int b = 0; b < batch;)
            {
                int left = batch - b;
                int width = left >= 5 ? 8 : left >= 3 ? 4 : left;
                int take = Math.Min(left, width);
                for (int j = 0; j < width; j++)
                {
                    slot[j] = b + Math.Min(j, take - 1);
                    x[j] = input + (long)slot[j] * k + head;
                }
                switch (width)
                {
                    case 8:
                        Dot1x8<TL>(wv, x, kv, sums);
                        break;
                    case 4:
                        Dot1x4<TL>(wv, x[0], x[1], x[2], x[3], kv, sums);
                        break;
                    case 2:
                        Dot1x2<TL>(wv, x[0], x[1], kv, sums);
                        break;
                    default:
                        sums[0] = Dot1x1<TL>(wv, x[0], kv);
                        break;
                }
                for (int j = 0; j < take; j++)
                    Store(job, row, slot[j], sums[j] + HeadDot<TL>(w, x[j] - head, head));
                b += take;
            }
        }
    }

    /// <summary>
    /// Weights before the first 64-byte boundary of every row, when all rows share one alignment (row bytes a
    /// multiple of 64); else 0. Safetensors places tensors 8-byte aligned, so a checkpoint's rows typically
    /// start mid-line, and every vector load of the row stream then straddles two cache lines: a weight
    /// offset by 48 bytes streamed 43-44 GB/s against 59-62 once the loop started on the boundary (bench
    /// kernels, fp32 5632x2048 batch 1, AVX-512). The head is summed in scalar (HeadDot); the input vectors,
    /// read from L1, take the misalignment instead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int AlignedHead<TL>(byte* weight, long rowBytes, int k) where TL : struct, IRowLoader
    {
        if (rowBytes % 64 != 0) return 0;
        int bytes = (int)((64 - ((nint)weight & 63)) & 63);
        int head = bytes / TL.ElementSize;
        return bytes % TL.ElementSize == 0 && head < k ? head : 0;
    }

    /// <summary>
    /// Σ weight[i] · x[i] over the first <paramref name="head"/> weights of a row (see AlignedHead), 8 at a time
    /// with the lanes past the head masked off: the row goes on for at least 64 more weights, so the loads stay
    /// inside it (a scalar loop here cost ~6 % of a bf16 decode step, whose head is up to 31 weights).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float HeadDot<TL>(byte* w, float* x, int head) where TL : struct, IRowLoader
    {
        if (head == 0) return 0;
        var lane = Vector256.Create(0f, 1, 2, 3, 4, 5, 6, 7);
        var sum = Vector256<float>.Zero;
        for (int i = 0; i < head; i += 8)
        {
            var keep = Vector256.LessThan(lane, Vector256.Create((float)(head - i)));
            sum = Vector256.ConditionalSelect(keep, Fma.MultiplyAdd(TL.Load(w, i), Avx.LoadVector256(x + i), sum), sum);
        }
        return Vector256.Sum(sum);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Job* job, int row, int b, float sum)
    {
        float value = sum * job->Scale;
        if (job->Bias != null)
            value += job->Bias[row];
        job->Output[(long)b * job->OutFeatures + row] = value;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x8<TL>(byte* w, float** x, int k, float* sums) where TL : struct, IRowLoader
    {
        float* x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5], x6 = x[6], x7 = x[7];
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        int i = 0;
        for (; i <= k - 8; i += 8)
        {
            Prefetch(w + (long)i * TL.ElementSize);
            Vector256<float> v = TL.Load(w, i);
            a0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i), a0);
            a1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i), a1);
            a2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x2 + i), a2);
            a3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x3 + i), a3);
            a4 = Fma.MultiplyAdd(v, Avx.LoadVector256(x4 + i), a4);
            a5 = Fma.MultiplyAdd(v, Avx.LoadVector256(x5 + i), a5);
            a6 = Fma.MultiplyAdd(v, Avx.LoadVector256(x6 + i), a6);
            a7 = Fma.MultiplyAdd(v, Avx.LoadVector256(x7 + i), a7);
        }
        sums[0] = Vector256.Sum(a0);
        sums[1] = Vector256.Sum(a1);
        sums[2] = Vector256.Sum(a2);
        sums[3] = Vector256.Sum(a3);
        sums[4] = Vector256.Sum(a4);
        sums[5] = Vector256.Sum(a5);
        sums[6] = Vector256.Sum(a6);
        sums[7] = Vector256.Sum(a7);
        for (; i < k; i++)
        {
            float u = TL.LoadScalar(w, i);
            sums[0] += u * x0[i];
            sums[1] += u * x1[i];
            sums[2] += u * x2[i];
            sums[3] += u * x3[i];
            sums[4] += u * x4[i];
            sums[5] += u * x5[i];
            sums[6] += u * x6[i];
            sums[7] += u * x7[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1x1<TL>(byte* w, float* x, int k) where TL : struct, IRowLoader
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i <= k - 32; i += 32)
        {
            Prefetch(w + (long)i * TL.ElementSize);
            if (TL.ElementSize == sizeof(float))
                Prefetch(w + (long)i * TL.ElementSize + 64);
            a0 = Fma.MultiplyAdd(TL.Load(w, i), Avx.LoadVector256(x + i), a0);
            a1 = Fma.MultiplyAdd(TL.Load(w, i + 8), Avx.LoadVector256(x + i + 8), a1);
            a2 = Fma.MultiplyAdd(TL.Load(w, i + 16), Avx.LoadVector256(x + i + 16), a2);
            a3 = Fma.MultiplyAdd(TL.Load(w, i + 24), Avx.LoadVector256(x + i + 24), a3);
        }
        for (; i <= k - 8; i += 8)
            a0 = Fma.MultiplyAdd(TL.Load(w, i), Avx.LoadVector256(x + i), a0);
        float sum = Vector256.Sum(Avx.Add(Avx.Add(a0, a1), Avx.Add(a2, a3)));
        for (; i < k; i++)
            sum += TL.LoadScalar(w, i) * x[i];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x2<TL>(byte* w, float* x0, float* x1, int k, float* sums) where TL : struct, IRowLoader
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        Vector256<float> b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i <= k - 32; i += 32)
        {
            Prefetch(w + (long)i * TL.ElementSize);
            if (TL.ElementSize == sizeof(float))
                Prefetch(w + (long)i * TL.ElementSize + 64);
            Vector256<float> v = TL.Load(w, i);
            a0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i), a0);
            b0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i), b0);
            v = TL.Load(w, i + 8);
            a1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i + 8), a1);
            b1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i + 8), b1);
            v = TL.Load(w, i + 16);
            a2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i + 16), a2);
            b2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i + 16), b2);
            v = TL.Load(w, i + 24);
            a3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i + 24), a3);
            b3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i + 24), b3);
        }
        for (; i <= k - 8; i += 8)
        {
            Vector256<float> v = TL.Load(w, i);
            a0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i), a0);
            b0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i), b0);
        }
        float s0 = Vector256.Sum(Avx.Add(Avx.Add(a0, a1), Avx.Add(a2, a3)));
        float s1 = Vector256.Sum(Avx.Add(Avx.Add(b0, b1), Avx.Add(b2, b3)));
        for (; i < k; i++)
        {
            float u = TL.LoadScalar(w, i);
            s0 += u * x0[i];
            s1 += u * x1[i];
        }
        sums[0] = s0;
        sums[1] = s1;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x4<TL>(byte* w, float* x0, float* x1, float* x2, float* x3, int k, float* sums) where TL : struct, IRowLoader
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        Vector256<float> b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i <= k - 16; i += 16)
        {
            Prefetch(w + (long)i * TL.ElementSize);
            Vector256<float> v = TL.Load(w, i);
            a0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i), a0);
            a1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i), a1);
            a2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x2 + i), a2);
            a3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x3 + i), a3);
            v = TL.Load(w, i + 8);
            b0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i + 8), b0);
            b1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i + 8), b1);
            b2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x2 + i + 8), b2);
            b3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x3 + i + 8), b3);
        }
        for (; i <= k - 8; i += 8)
        {
            Vector256<float> v = TL.Load(w, i);
            a0 = Fma.MultiplyAdd(v, Avx.LoadVector256(x0 + i), a0);
            a1 = Fma.MultiplyAdd(v, Avx.LoadVector256(x1 + i), a1);
            a2 = Fma.MultiplyAdd(v, Avx.LoadVector256(x2 + i), a2);
            a3 = Fma.MultiplyAdd(v, Avx.LoadVector256(x3 + i), a3);
        }
        float s0 = Vector256.Sum(Avx.Add(a0, b0)), s1 = Vector256.Sum(Avx.Add(a1, b1));
        float s2 = Vector256.Sum(Avx.Add(a2, b2)), s3 = Vector256.Sum(Avx.Add(a3, b3));
        for (; i < k; i++)
        {
            float u = TL.LoadScalar(w, i);
            s0 += u * x0[i];
            s1 += u * x1[i];
            s2 += u * x2[i];
            s3 += u * x3[i];
        }
        sums[0] = s0;
        sums[1] = s1;
        sums[2] = s2;
        sums[3] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2x4<TL>(byte* w0, byte* w1, float* x0, float* x1, float* x2, float* x3, int k, float* sums) where TL : struct, IRowLoader
    {
        Vector256<float> a00 = Vector256<float>.Zero, a01 = a00, a02 = a00, a03 = a00;
        Vector256<float> a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        int i = 0;
        for (; i <= k - 8; i += 8)
        {
            Prefetch(w0 + (long)i * TL.ElementSize);
            Prefetch(w1 + (long)i * TL.ElementSize);
            Vector256<float> v0 = TL.Load(w0, i);
            Vector256<float> v1 = TL.Load(w1, i);
            Vector256<float> y = Avx.LoadVector256(x0 + i);
            a00 = Fma.MultiplyAdd(v0, y, a00);
            a10 = Fma.MultiplyAdd(v1, y, a10);
            y = Avx.LoadVector256(x1 + i);
            a01 = Fma.MultiplyAdd(v0, y, a01);
            a11 = Fma.MultiplyAdd(v1, y, a11);
            y = Avx.LoadVector256(x2 + i);
            a02 = Fma.MultiplyAdd(v0, y, a02);
            a12 = Fma.MultiplyAdd(v1, y, a12);
            y = Avx.LoadVector256(x3 + i);
            a03 = Fma.MultiplyAdd(v0, y, a03);
            a13 = Fma.MultiplyAdd(v1, y, a13);
        }
        float s00 = Vector256.Sum(a00), s01 = Vector256.Sum(a01), s02 = Vector256.Sum(a02), s03 = Vector256.Sum(a03);
        float s10 = Vector256.Sum(a10), s11 = Vector256.Sum(a11), s12 = Vector256.Sum(a12), s13 = Vector256.Sum(a13);
        for (; i < k; i++)
        {
            float u0 = TL.LoadScalar(w0, i), u1 = TL.LoadScalar(w1, i);
            float y0 = x0[i], y1 = x1[i], y2 = x2[i], y3 = x3[i];
            s00 += u0 * y0;
            s01 += u0 * y1;
            s02 += u0 * y2;
            s03 += u0 * y3;
            s10 += u1 * y0;
            s11 += u1 * y1;
            s12 += u1 * y2;
            s13 += u1 * y3;
        }
        sums[0] = s00;
        sums[1] = s01;
        sums[2] = s02;
        sums[3] = s03;
        sums[4] = s10;
        sums[5] = s11;
        sums[6] = s12;
        sums[7] = s13;
    }
}
