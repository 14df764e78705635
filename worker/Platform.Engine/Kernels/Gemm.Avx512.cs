// AVX-512F register tile for Gemm: 6 weight rows x 4 token rows of zmm accumulators (24), the 6
// widened weight vectors of a k step (6) and one input vector (1): 31 of the 32 zmm registers.
// Per 16-weight k step: 6 weight loads (from the packed L1 tile, or fp32 rows in place: rowStride apart), 4 input loads, 24 FMAs
// (10 loads per 24 FMAs; a 1 x 8 Gemv tile needs 9 per 8). Why 6 x 4 and not 3 x 8 (11 loads per
// 24 FMAs): the token rows' inputs come from L2 (the whole panel is re-read for every weight tile),
// and 4 input loads per 24 FMAs halve that L2 traffic against 8; batches of 8/16/32/64 are still
// whole 4-row groups. The k loop also advances the next tile's L2 prefetch (Gemm.cs).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Platform.Engine.Kernels.Gemv;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemm
{
    /// <summary>Weight rows per AVX-512 register tile.</summary>
    private const int WeightTile512 = 6;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkAvx512<TL>(void* job, int chunk) where TL : struct, IRowLoader =>
        ChunkTiles<TL>((Job*)job, chunk, WeightTile512, 16, &Tile6x4Avx512);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static byte* Tile6x4Avx512(float* w, long rowStride, long stepFloats, float* x0, float* x1, float* x2, float* x3, int steps, float* acc, bool accumulate, byte* prefetch, byte* prefetchEnd)
    {
        Vector512<float> c00 = Vector512<float>.Zero, c01 = c00, c02 = c00, c03 = c00;
        Vector512<float> c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        Vector512<float> c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        Vector512<float> c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        Vector512<float> c40 = c00, c41 = c00, c42 = c00, c43 = c00;
        Vector512<float> c50 = c00, c51 = c00, c52 = c00, c53 = c00;
        if (accumulate)
        {
            c00 = Avx512F.LoadAlignedVector512(acc + 0);
            c01 = Avx512F.LoadAlignedVector512(acc + 16);
            c02 = Avx512F.LoadAlignedVector512(acc + 32);
            c03 = Avx512F.LoadAlignedVector512(acc + 48);
            c10 = Avx512F.LoadAlignedVector512(acc + 64);
            c11 = Avx512F.LoadAlignedVector512(acc + 80);
            c12 = Avx512F.LoadAlignedVector512(acc + 96);
            c13 = Avx512F.LoadAlignedVector512(acc + 112);
            c20 = Avx512F.LoadAlignedVector512(acc + 128);
            c21 = Avx512F.LoadAlignedVector512(acc + 144);
            c22 = Avx512F.LoadAlignedVector512(acc + 160);
            c23 = Avx512F.LoadAlignedVector512(acc + 176);
            c30 = Avx512F.LoadAlignedVector512(acc + 192);
            c31 = Avx512F.LoadAlignedVector512(acc + 208);
            c32 = Avx512F.LoadAlignedVector512(acc + 224);
            c33 = Avx512F.LoadAlignedVector512(acc + 240);
            c40 = Avx512F.LoadAlignedVector512(acc + 256);
            c41 = Avx512F.LoadAlignedVector512(acc + 272);
            c42 = Avx512F.LoadAlignedVector512(acc + 288);
            c43 = Avx512F.LoadAlignedVector512(acc + 304);
            c50 = Avx512F.LoadAlignedVector512(acc + 320);
            c51 = Avx512F.LoadAlignedVector512(acc + 336);
            c52 = Avx512F.LoadAlignedVector512(acc + 352);
            c53 = Avx512F.LoadAlignedVector512(acc + 368);
        }
        for (int s = 0; s < steps; s++)
        {
            prefetch = PrefetchNext(prefetch, prefetchEnd);
            prefetch = PrefetchNext(prefetch, prefetchEnd);
            Vector512<float> w0 = Avx512F.LoadVector512(w);
            Vector512<float> w1 = Avx512F.LoadVector512(w + 1 * rowStride);
            Vector512<float> w2 = Avx512F.LoadVector512(w + 2 * rowStride);
            Vector512<float> w3 = Avx512F.LoadVector512(w + 3 * rowStride);
            Vector512<float> w4 = Avx512F.LoadVector512(w + 4 * rowStride);
            Vector512<float> w5 = Avx512F.LoadVector512(w + 5 * rowStride);
            Vector512<float> x = Avx512F.LoadVector512(x0);
            c00 = Avx512F.FusedMultiplyAdd(w0, x, c00);
            c10 = Avx512F.FusedMultiplyAdd(w1, x, c10);
            c20 = Avx512F.FusedMultiplyAdd(w2, x, c20);
            c30 = Avx512F.FusedMultiplyAdd(w3, x, c30);
            c40 = Avx512F.FusedMultiplyAdd(w4, x, c40);
            c50 = Avx512F.FusedMultiplyAdd(w5, x, c50);
            x = Avx512F.LoadVector512(x1);
            c01 = Avx512F.FusedMultiplyAdd(w0, x, c01);
            c11 = Avx512F.FusedMultiplyAdd(w1, x, c11);
            c21 = Avx512F.FusedMultiplyAdd(w2, x, c21);
            c31 = Avx512F.FusedMultiplyAdd(w3, x, c31);
            c41 = Avx512F.FusedMultiplyAdd(w4, x, c41);
            c51 = Avx512F.FusedMultiplyAdd(w5, x, c51);
            x = Avx512F.LoadVector512(x2);
            c02 = Avx512F.FusedMultiplyAdd(w0, x, c02);
            c12 = Avx512F.FusedMultiplyAdd(w1, x, c12);
            c22 = Avx512F.FusedMultiplyAdd(w2, x, c22);
            c32 = Avx512F.FusedMultiplyAdd(w3, x, c32);
            c42 = Avx512F.FusedMultiplyAdd(w4, x, c42);
            c52 = Avx512F.FusedMultiplyAdd(w5, x, c52);
            x = Avx512F.LoadVector512(x3);
            c03 = Avx512F.FusedMultiplyAdd(w0, x, c03);
            c13 = Avx512F.FusedMultiplyAdd(w1, x, c13);
            c23 = Avx512F.FusedMultiplyAdd(w2, x, c23);
            c33 = Avx512F.FusedMultiplyAdd(w3, x, c33);
            c43 = Avx512F.FusedMultiplyAdd(w4, x, c43);
            c53 = Avx512F.FusedMultiplyAdd(w5, x, c53);
            w += stepFloats;
            x0 += 16;
            x1 += 16;
            x2 += 16;
            x3 += 16;
        }
        Avx512F.StoreAligned(acc + 0, c00);
        Avx512F.StoreAligned(acc + 16, c01);
        Avx512F.StoreAligned(acc + 32, c02);
        Avx512F.StoreAligned(acc + 48, c03);
        Avx512F.StoreAligned(acc + 64, c10);
        Avx512F.StoreAligned(acc + 80, c11);
        Avx512F.StoreAligned(acc + 96, c12);
        Avx512F.StoreAligned(acc + 112, c13);
        Avx512F.StoreAligned(acc + 128, c20);
        Avx512F.StoreAligned(acc + 144, c21);
        Avx512F.StoreAligned(acc + 160, c22);
        Avx512F.StoreAligned(acc + 176, c23);
        Avx512F.StoreAligned(acc + 192, c30);
        Avx512F.StoreAligned(acc + 208, c31);
        Avx512F.StoreAligned(acc + 224, c32);
        Avx512F.StoreAligned(acc + 240, c33);
        Avx512F.StoreAligned(acc + 256, c40);
        Avx512F.StoreAligned(acc + 272, c41);
        Avx512F.StoreAligned(acc + 288, c42);
        Avx512F.StoreAligned(acc + 304, c43);
        Avx512F.StoreAligned(acc + 320, c50);
        Avx512F.StoreAligned(acc + 336, c51);
        Avx512F.StoreAligned(acc + 352, c52);
        Avx512F.StoreAligned(acc + 368, c53);
        return prefetch;
    }
}
