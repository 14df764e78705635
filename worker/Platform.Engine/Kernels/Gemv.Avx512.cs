// AVX-512F inner kernels for Gemv: the Vector512 twin of Gemv.Avx2.cs, for every weight width
// (fp32, fp16, bf16) through the same row loaders (IRowLoader.Load512). Used where the CPU has
// AVX512F (Gemv.ActivePath), except the float GEMVs on AMD Zen 4 (Gemv.FloatPath takes AVX2 there, but for
// fp32 at batch 1: Gemv.F32Path);
// Gemv.ForceVector256 / ForceVector512 pin a family for tests and the bench.
//
// Why a second family: a zmm FMA does 16 lanes, so at batch b the arithmetic per weight byte halves
// against AVX2. Batch-1 decode is bound by memory either way; batch 4-16 on two cores runs out of
// AVX2 FMAs before DRAM runs out of bandwidth (see Gemv.cs), which AVX-512 moves back on a core with
// full-width units. Zen 4 splits each 512-bit op into two 256-bit halves: there the AVX2 kernels
// measured as fast or faster at every batch (`bench kernels --avx2-beside`, docs/engine.md).
//
// Same access pattern as the AVX2 kernels (one sequential row stream per core, a software prefetch
// 4 KB ahead per 64 bytes of weights) and the same tiles, one zmm accumulator per batch row:
//   batch 1   : 1 x 1, k unrolled 4x -> 4 chains
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
        // The vector loop starts at the rows' first 64-byte boundary (see AlignedHead); kv weights remain.
        int head = AlignedHead<TL>(weight, rowBytes, k), kv = k - head;

        for (int row = start; row < end; row++)
        {
            byte* w = weight + row * rowBytes, wv = w + head * TL.ElementSize;
            if (batch == 1)
            {
                Store(job, row, 0, Dot512x1<TL>(wv, input + head, kv) + HeadDot<TL>(w, input, head));
                continue;
            }
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
                        Dot512x8<TL>(wv, x, kv, sums);
                        break;
                    case 4:
                        Dot512x4<TL>(wv, x[0], x[1], x[2], x[3], kv, sums);
                        break;
                    case 2:
                        Dot512x2<TL>(wv, x[0], x[1], kv, sums);
                        break;
                    default:
                        sums[0] = Dot512x1<TL>(wv, x[0], kv);
                        break;
                }
                for (int j = 0; j < take; j++)
                    Store(job, row, slot[j], sums[j] + HeadDot<TL>(w, x[j] - head, head));
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
