// AVX-512F inner kernels for Gemv: the Vector512 twin of Gemv.Avx2.cs, for every weight width
// (fp32, fp16, bf16) through the same row loaders (IRowLoader.Load512). Used where the CPU has
// AVX512F (Gemv.ActivePath); Gemv.ForceVector256 pins the AVX2 kernels for tests and the bench.
//
// Why a second family: a zmm FMA does 16 lanes, so at batch b the arithmetic per weight byte halves
// against AVX2. Batch-1 decode is bound by memory either way; batch 4-16 on two cores runs out of
// AVX2 FMAs before DRAM runs out of bandwidth (see Gemv.cs), which AVX-512 moves back.
//
// Batch > 1 has the AVX2 kernels' access pattern (one sequential row stream per core, a software
// prefetch 4 KB ahead per 64 bytes of weights) and tiles, one zmm accumulator per batch row. Batch 1
// (the decode step of one sequence, bound by the weight stream) reads four rows at a time instead
// (Dot512Rows4): each input vector is loaded once for four rows, four row streams are in flight per
// core, and the next four rows are prefetched a whole group ahead (GroupRowsAtBatch1 switches back
// to one row at a time, for the bench's A/B). Gemv.Avx2.cs records 4-row tiles measured slower from
// DRAM than one row (each extra stream paid the hardware prefetcher's ramp-up at every 4 KB page);
// those tiles had no software prefetch, while this one fetches every line of the next group itself.
// bench kernels, batch 1, 2 threads, the two kernels in the same interleaved rounds on a loaded
// machine (load average 8-16, streaming probe 13-21 GB/s): 4 rows 1.13-1.39x faster than 1 row in
// all 8 shape x width cells of one run (2048x2048 .. 32000x2048, fp32 and bf16), 1.09-1.42x in 5 of 6
// of another and 0.96x in one (32000x2048 fp32), 0.90-1.64x in a third (docs/engine.md); a quiet run
// is still to be made. llama.cpp
// does the same for its f32/f16/bf16 decode: ggml's CPU mul_mat tries llamafile's tinyBLAS first,
// whose tiles are 4 weight rows x up to 6 token columns, so 4 x 1 at batch 1.
//   batch 1   : 4 x 1 rows, k unrolled 2x -> 8 chains (rows left over: 1 x 1, k unrolled 4x)
//   batch > 1 : 1 x 8 tiles (5-7 padded), remainder 3-4 as 1 x 4 (k unrolled 2x), 2 as 1 x 2, 1 as 1 x 1.
// The AVX2 2 x 4 tile for batch 3-4 is not repeated: with 32 zmm registers and 16-lane loads the
// 1 x 4 tile needs 5 loads per 4 FMAs of 16 lanes, not the AVX2 kernel's load-bound case.
// k % 16 != 0 is finished with scalar code. fp16 uses the same w * 2^-112 decode as AVX2
// (sign-extend, shift 13, mask; see Gemv.Avx2.cs) with the same input/output scaling by the caller.
// bf16 is widened exactly (zero-extend, shift 16); AVX512_BF16's vdpbf16ps is not used because it
// would round the fp32 activations to bf16 as well.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    private static void ChunkF32Avx512(void* job, int chunk) => ChunkAvx512<F32Loader>((Job*)job, chunk);

    private static void ChunkF16Avx512(void* job, int chunk) => ChunkAvx512<F16Loader>((Job*)job, chunk);

    private static void ChunkBF16Avx512(void* job, int chunk) => ChunkAvx512<BF16Loader>((Job*)job, chunk);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkAvx512<TL>(Job* job, int chunk) where TL : struct, IRowLoader
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

        if (batch == 1)
        {
            int row = start;
            if (GroupRowsAtBatch1)
            {
                for (; row + 4 <= end; row += 4)
                {
                    Dot512Rows4<TL>(weight + row * rowBytes, rowBytes, input, k, sums);
                    for (int j = 0; j < 4; j++)
                        Store(job, row + j, 0, sums[j]);
                }
            }
            for (; row < end; row++)
                Store(job, row, 0, Dot512x1<TL>(weight + row * rowBytes, input, k));
            return;
        }

        for (int row = start; row < end; row++)
        {
            byte* w = weight + row * rowBytes;
            for (int b = 0; b < batch;)
            {
                int left = batch - b;
                int width = left >= 5 ? 8 : left >= 3 ? 4 : left;
                int take = Math.Min(left, width);
                for (int j = 0; j < width; j++)
                {
                    slot[j] = b + Math.Min(j, take - 1);
                    x[j] = input + (long)slot[j] * k;
                }
                switch (width)
                {
                    case 8:
                        Dot512x8<TL>(w, x, k, sums);
                        break;
                    case 4:
                        Dot512x4<TL>(w, x[0], x[1], x[2], x[3], k, sums);
                        break;
                    case 2:
                        Dot512x2<TL>(w, x[0], x[1], k, sums);
                        break;
                    default:
                        sums[0] = Dot512x1<TL>(w, x[0], k);
                        break;
                }
                for (int j = 0; j < take; j++)
                    Store(job, row, slot[j], sums[j]);
                b += take;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Input512(float* x, int i) => Avx512F.LoadVector512(x + i);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot512x1<TL>(byte* w, float* x, int k) where TL : struct, IRowLoader
    {
        Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i <= k - 64; i += 64)
        {
            // 64 weights span 128-256 bytes: one prefetch per 64 bytes.
            byte* at = w + (long)i * TL.ElementSize;
            Prefetch(at);
            Prefetch(at + 64);
            if (TL.ElementSize == sizeof(float))
            {
                Prefetch(at + 128);
                Prefetch(at + 192);
            }
            a0 = Avx512F.FusedMultiplyAdd(TL.Load512(w, i), Input512(x, i), a0);
            a1 = Avx512F.FusedMultiplyAdd(TL.Load512(w, i + 16), Input512(x, i + 16), a1);
            a2 = Avx512F.FusedMultiplyAdd(TL.Load512(w, i + 32), Input512(x, i + 32), a2);
            a3 = Avx512F.FusedMultiplyAdd(TL.Load512(w, i + 48), Input512(x, i + 48), a3);
        }
        for (; i <= k - 16; i += 16)
            a0 = Avx512F.FusedMultiplyAdd(TL.Load512(w, i), Input512(x, i), a0);
        float sum = Vector512.Sum(Avx512F.Add(Avx512F.Add(a0, a1), Avx512F.Add(a2, a3)));
        for (; i < k; i++)
            sum += TL.LoadScalar(w, i) * x[i];
        return sum;
    }

    /// <summary>
    /// Batch 1, four consecutive weight rows against one input: sums[j] = row j . x. Each 16-input vector is
    /// loaded once for the four rows (Dot512x1 loads it once per row), four row streams are in flight at once,
    /// and k is unrolled 2x, so 8 independent FMA chains. While this group is read, the next group of four rows
    /// (the same columns, groupBytes further on) is prefetched, one line per 64 bytes: every line of the next
    /// group exactly once, a whole group ahead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot512Rows4<TL>(byte* w0, long rowBytes, float* x, int k, float* sums) where TL : struct, IRowLoader
    {
        byte* w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        long groupBytes = 4 * rowBytes;
        Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        Vector512<float> b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i <= k - 32; i += 32)
        {
            // 32 weights per row: 64 bytes (16-bit) or 128 bytes (fp32) of each row.
            long at = (long)i * TL.ElementSize + groupBytes;
            Sse.Prefetch0(w0 + at);
            Sse.Prefetch0(w1 + at);
            Sse.Prefetch0(w2 + at);
            Sse.Prefetch0(w3 + at);
            if (TL.ElementSize == sizeof(float))
            {
                Sse.Prefetch0(w0 + at + 64);
                Sse.Prefetch0(w1 + at + 64);
                Sse.Prefetch0(w2 + at + 64);
                Sse.Prefetch0(w3 + at + 64);
            }
            Vector512<float> x0 = Input512(x, i), x1 = Input512(x, i + 16);
            a0 = Avx512F.FusedMultiplyAdd(TL.Load512(w0, i), x0, a0);
            a1 = Avx512F.FusedMultiplyAdd(TL.Load512(w1, i), x0, a1);
            a2 = Avx512F.FusedMultiplyAdd(TL.Load512(w2, i), x0, a2);
            a3 = Avx512F.FusedMultiplyAdd(TL.Load512(w3, i), x0, a3);
            b0 = Avx512F.FusedMultiplyAdd(TL.Load512(w0, i + 16), x1, b0);
            b1 = Avx512F.FusedMultiplyAdd(TL.Load512(w1, i + 16), x1, b1);
            b2 = Avx512F.FusedMultiplyAdd(TL.Load512(w2, i + 16), x1, b2);
            b3 = Avx512F.FusedMultiplyAdd(TL.Load512(w3, i + 16), x1, b3);
        }
        if (i <= k - 16)
        {
            Vector512<float> x0 = Input512(x, i);
            a0 = Avx512F.FusedMultiplyAdd(TL.Load512(w0, i), x0, a0);
            a1 = Avx512F.FusedMultiplyAdd(TL.Load512(w1, i), x0, a1);
            a2 = Avx512F.FusedMultiplyAdd(TL.Load512(w2, i), x0, a2);
            a3 = Avx512F.FusedMultiplyAdd(TL.Load512(w3, i), x0, a3);
            i += 16;
        }
        float s0 = Vector512.Sum(Avx512F.Add(a0, b0)), s1 = Vector512.Sum(Avx512F.Add(a1, b1));
        float s2 = Vector512.Sum(Avx512F.Add(a2, b2)), s3 = Vector512.Sum(Avx512F.Add(a3, b3));
        for (; i < k; i++)
        {
            float xi = x[i];
            s0 += TL.LoadScalar(w0, i) * xi;
            s1 += TL.LoadScalar(w1, i) * xi;
            s2 += TL.LoadScalar(w2, i) * xi;
            s3 += TL.LoadScalar(w3, i) * xi;
        }
        sums[0] = s0;
        sums[1] = s1;
        sums[2] = s2;
        sums[3] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot512x2<TL>(byte* w, float* x0, float* x1, int k, float* sums) where TL : struct, IRowLoader
    {
        Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        Vector512<float> b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i <= k - 64; i += 64)
        {
            byte* at = w + (long)i * TL.ElementSize;
            Prefetch(at);
            Prefetch(at + 64);
            if (TL.ElementSize == sizeof(float))
            {
                Prefetch(at + 128);
                Prefetch(at + 192);
            }
            Vector512<float> v = TL.Load512(w, i);
            a0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i), a0);
            b0 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i), b0);
            v = TL.Load512(w, i + 16);
            a1 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i + 16), a1);
            b1 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i + 16), b1);
            v = TL.Load512(w, i + 32);
            a2 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i + 32), a2);
            b2 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i + 32), b2);
            v = TL.Load512(w, i + 48);
            a3 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i + 48), a3);
            b3 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i + 48), b3);
        }
        for (; i <= k - 16; i += 16)
        {
            Vector512<float> v = TL.Load512(w, i);
            a0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i), a0);
            b0 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i), b0);
        }
        float s0 = Vector512.Sum(Avx512F.Add(Avx512F.Add(a0, a1), Avx512F.Add(a2, a3)));
        float s1 = Vector512.Sum(Avx512F.Add(Avx512F.Add(b0, b1), Avx512F.Add(b2, b3)));
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
    private static void Dot512x4<TL>(byte* w, float* x0, float* x1, float* x2, float* x3, int k, float* sums) where TL : struct, IRowLoader
    {
        Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        Vector512<float> b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i <= k - 32; i += 32)
        {
            byte* at = w + (long)i * TL.ElementSize;
            Prefetch(at);
            if (TL.ElementSize == sizeof(float))
                Prefetch(at + 64);
            Vector512<float> v = TL.Load512(w, i);
            a0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i), a0);
            a1 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i), a1);
            a2 = Avx512F.FusedMultiplyAdd(v, Input512(x2, i), a2);
            a3 = Avx512F.FusedMultiplyAdd(v, Input512(x3, i), a3);
            v = TL.Load512(w, i + 16);
            b0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i + 16), b0);
            b1 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i + 16), b1);
            b2 = Avx512F.FusedMultiplyAdd(v, Input512(x2, i + 16), b2);
            b3 = Avx512F.FusedMultiplyAdd(v, Input512(x3, i + 16), b3);
        }
        for (; i <= k - 16; i += 16)
        {
            Vector512<float> v = TL.Load512(w, i);
            a0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i), a0);
            a1 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i), a1);
            a2 = Avx512F.FusedMultiplyAdd(v, Input512(x2, i), a2);
            a3 = Avx512F.FusedMultiplyAdd(v, Input512(x3, i), a3);
        }
        float s0 = Vector512.Sum(Avx512F.Add(a0, b0)), s1 = Vector512.Sum(Avx512F.Add(a1, b1));
        float s2 = Vector512.Sum(Avx512F.Add(a2, b2)), s3 = Vector512.Sum(Avx512F.Add(a3, b3));
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
    private static void Dot512x8<TL>(byte* w, float** x, int k, float* sums) where TL : struct, IRowLoader
    {
        float* x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5], x6 = x[6], x7 = x[7];
        Vector512<float> a0 = Vector512<float>.Zero, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        int i = 0;
        for (; i <= k - 16; i += 16)
        {
            byte* at = w + (long)i * TL.ElementSize;
            Prefetch(at);
            Vector512<float> v = TL.Load512(w, i);
            a0 = Avx512F.FusedMultiplyAdd(v, Input512(x0, i), a0);
            a1 = Avx512F.FusedMultiplyAdd(v, Input512(x1, i), a1);
            a2 = Avx512F.FusedMultiplyAdd(v, Input512(x2, i), a2);
            a3 = Avx512F.FusedMultiplyAdd(v, Input512(x3, i), a3);
            a4 = Avx512F.FusedMultiplyAdd(v, Input512(x4, i), a4);
            a5 = Avx512F.FusedMultiplyAdd(v, Input512(x5, i), a5);
            a6 = Avx512F.FusedMultiplyAdd(v, Input512(x6, i), a6);
            a7 = Avx512F.FusedMultiplyAdd(v, Input512(x7, i), a7);
        }
        sums[0] = Vector512.Sum(a0);
        sums[1] = Vector512.Sum(a1);
        sums[2] = Vector512.Sum(a2);
        sums[3] = Vector512.Sum(a3);
        sums[4] = Vector512.Sum(a4);
        sums[5] = Vector512.Sum(a5);
        sums[6] = Vector512.Sum(a6);
        sums[7] = Vector512.Sum(a7);
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
}
