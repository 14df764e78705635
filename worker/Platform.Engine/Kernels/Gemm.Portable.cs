// Fallback Gemm chunk for CPUs without AVX2+FMA (and for tests, via Gemv.ForcePortable): each weight
// row is widened once into a per-thread fp32 buffer with the loader's scalar decode (the same scale
// as the vector paths, so the caller's fp16 scaling holds), then dotted with every token row using
// System.Numerics.Vector. Correct everywhere; not tuned, the target hardware takes a tiled path.
using System.Numerics;
using System.Runtime.CompilerServices;
using static Platform.Engine.Kernels.Gemv;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemm
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkPortable<TL>(void* p, int chunk) where TL : struct, IRowLoader
    {
        var job = (Job*)p;
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        long rowBytes = TL.RowBytes(k);
        float* widened = Scratch(k);
        var weights = new ReadOnlySpan<float>(widened, k);
        for (int row = start; row < end; row++)
        {
            byte* source = job->Weight + row * rowBytes;
            for (int i = 0; i < k; i++)
                widened[i] = TL.LoadScalar(source, i);
            for (int token = 0; token < job->Rows; token++)
            {
                var x = new ReadOnlySpan<float>(job->Input + token * job->InputStride, k);
                StoreResult(job, row, token, DotPortable(weights, x), null, 0, k);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotPortable(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int width = Vector<float>.Count;
        Vector<float> acc0 = Vector<float>.Zero, acc1 = Vector<float>.Zero;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i <= a.Length - 2 * width; i += 2 * width)
            {
                acc0 += new Vector<float>(a.Slice(i, width)) * new Vector<float>(b.Slice(i, width));
                acc1 += new Vector<float>(a.Slice(i + width, width)) * new Vector<float>(b.Slice(i + width, width));
            }
        }
        float sum = Vector.Sum(acc0 + acc1);
        for (; i < a.Length; i++)
            sum += a[i] * b[i];
        return sum;
    }
}
