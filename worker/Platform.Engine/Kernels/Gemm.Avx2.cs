// AVX2 + FMA register tile for Gemm: 3 weight rows x 4 token rows of ymm accumulators (12), the 3
// widened weight vectors of a k step (3) and one input vector (1): all 16 ymm registers of an AVX2
// CPU. Per 8-weight k step: 3 weight loads (from the packed L1 tile, or fp32 rows in place: rowStride
// apart), 4 input loads, 12 FMAs
// (7 loads per 12 FMAs, against 9 per 8 for Gemv's 1 x 8 tile). The k loop also advances the next
// tile's L2 prefetch (Gemm.cs).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemm
{
    /// <summary>Weight rows per AVX2 register tile.</summary>
    private const int WeightTile256 = 3;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkAvx2<TL>(void* job, int chunk) where TL : struct, Gemv.IRowLoader =>
        ChunkTiles<TL>((Job*)job, chunk, WeightTile256, 8, &Tile3x4Avx2);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static byte* Tile3x4Avx2(float* w, long rowStride, long stepFloats, float* x0, float* x1, float* x2, float* x3, int steps, float* acc, bool accumulate, byte* prefetch, byte* prefetchEnd)
    {
        Vector256<float> c00 = Vector256<float>.Zero, c01 = c00, c02 = c00, c03 = c00;
        Vector256<float> c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        Vector256<float> c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        if (accumulate)
        {
            c00 = Avx.LoadAlignedVector256(acc + 0);
            c01 = Avx.LoadAlignedVector256(acc + 8);
            c02 = Avx.LoadAlignedVector256(acc + 16);
            c03 = Avx.LoadAlignedVector256(acc + 24);
            c10 = Avx.LoadAlignedVector256(acc + 32);
            c11 = Avx.LoadAlignedVector256(acc + 40);
            c12 = Avx.LoadAlignedVector256(acc + 48);
            c13 = Avx.LoadAlignedVector256(acc + 56);
            c20 = Avx.LoadAlignedVector256(acc + 64);
            c21 = Avx.LoadAlignedVector256(acc + 72);
            c22 = Avx.LoadAlignedVector256(acc + 80);
            c23 = Avx.LoadAlignedVector256(acc + 88);
        }
        for (int s = 0; s < steps; s++)
        {
            prefetch = PrefetchNext(prefetch, prefetchEnd);
            Vector256<float> w0 = Avx.LoadVector256(w);
            Vector256<float> w1 = Avx.LoadVector256(w + rowStride);
            Vector256<float> w2 = Avx.LoadVector256(w + 2 * rowStride);
            Vector256<float> x = Avx.LoadVector256(x0);
            c00 = Fma.MultiplyAdd(w0, x, c00);
            c10 = Fma.MultiplyAdd(w1, x, c10);
            c20 = Fma.MultiplyAdd(w2, x, c20);
            x = Avx.LoadVector256(x1);
            c01 = Fma.MultiplyAdd(w0, x, c01);
            c11 = Fma.MultiplyAdd(w1, x, c11);
            c21 = Fma.MultiplyAdd(w2, x, c21);
            x = Avx.LoadVector256(x2);
            c02 = Fma.MultiplyAdd(w0, x, c02);
            c12 = Fma.MultiplyAdd(w1, x, c12);
            c22 = Fma.MultiplyAdd(w2, x, c22);
            x = Avx.LoadVector256(x3);
            c03 = Fma.MultiplyAdd(w0, x, c03);
            c13 = Fma.MultiplyAdd(w1, x, c13);
            c23 = Fma.MultiplyAdd(w2, x, c23);
            w += stepFloats;
            x0 += 8;
            x1 += 8;
            x2 += 8;
            x3 += 8;
        }
        Avx.StoreAligned(acc + 0, c00);
        Avx.StoreAligned(acc + 8, c01);
        Avx.StoreAligned(acc + 16, c02);
        Avx.StoreAligned(acc + 24, c03);
        Avx.StoreAligned(acc + 32, c10);
        Avx.StoreAligned(acc + 40, c11);
        Avx.StoreAligned(acc + 48, c12);
        Avx.StoreAligned(acc + 56, c13);
        Avx.StoreAligned(acc + 64, c20);
        Avx.StoreAligned(acc + 72, c21);
        Avx.StoreAligned(acc + 80, c22);
        Avx.StoreAligned(acc + 88, c23);
        return prefetch;
    }
}
