// Fallback Gemv kernels for CPUs without AVX2+FMA (and for tests, via Gemv.ForcePortable):
// System.Numerics.Vector<float> dot products, one weight row at a time. fp16 and bf16 rows are first
// widened into a per-thread fp32 row buffer (fp16 with the runtime's Half conversion, bf16 by a 16-bit shift), then treated
// like fp32. Correct everywhere; not tuned, the target hardware takes the AVX2 path.
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemv
{
    [ThreadStatic]
    private static float[]? _rowBuffer;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkF32Portable(void* p, int chunk)
    {
        var job = (Job*)p;
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        float* weight = (float*)job->Weight;
        for (int row = start; row < end; row++)
            PortableRow(job, row, new ReadOnlySpan<float>(weight + (long)row * k, k));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkF16Portable(void* p, int chunk)
    {
        var job = (Job*)p;
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        Half* weight = (Half*)job->Weight;
        float[] buffer = _rowBuffer is { } b && b.Length >= k ? b : (_rowBuffer = new float[k]);
        Span<float> row32 = buffer.AsSpan(0, k);
        for (int row = start; row < end; row++)
        {
            Half* source = weight + (long)row * k;
            for (int i = 0; i < k; i++)
                row32[i] = (float)source[i];
            PortableRow(job, row, row32);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkBF16Portable(void* p, int chunk)
    {
        var job = (Job*)p;
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        ushort* weight = (ushort*)job->Weight;
        float[] buffer = _rowBuffer is { } b && b.Length >= k ? b : (_rowBuffer = new float[k]);
        Span<float> row32 = buffer.AsSpan(0, k);
        for (int row = start; row < end; row++)
        {
            ushort* source = weight + (long)row * k;
            for (int i = 0; i < k; i++)
                row32[i] = WidenBFloat16(source[i]);
            PortableRow(job, row, row32);
        }
    }

    private static void PortableRow(Job* job, int row, ReadOnlySpan<float> weights)
    {
        int k = job->InFeatures;
        for (int b = 0; b < job->Batch; b++)
        {
            var x = new ReadOnlySpan<float>(job->Input + (long)b * k, k);
            float sum = Dot(weights, x);
            float value = sum * job->Scale;
            if (job->Bias != null)
                value += job->Bias[row];
            job->Output[(long)b * job->OutFeatures + row] = value;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
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
