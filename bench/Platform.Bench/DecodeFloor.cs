// The floor under decode attention on this machine: read the same K/V rows through the same slots and do
// the same number of FMAs per row as the attention kernel (G·d for the scores and G·d for P·V per KV head),
// with nothing else: no softmax, no reductions, no stores. `bench prefill --decode-only` prints its rate
// beside PagedAttention's, so the gap between the kernel and what the cores can do with those bytes is
// measured, not argued. On a CPU whose FMA rate is high against its memory (AVX-512) the floor is the
// streaming read; on an AVX2-only Zen 1 (one 256-bit FMA per cycle) the FMAs alone take about half the
// read time, and how well they overlap with the misses sets how close attention can get to the read.
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Platform.Engine.Kernels;
using Platform.Engine.KvCache;

namespace Platform.Bench;

internal static unsafe class DecodeFloor
{
    private struct Job
    {
        public float* Keys, Values;
        public long* Slots;
        public int Length, RowFloats, Groups, Threads;
        public float Sink;
    }

    /// <summary>Best of 20 passes over every layer's pools (one call per layer, as a decode step), in seconds per layer.</summary>
    public static double Measure(PagedKvStore store, int layers, long[] slots, int context, int kvHeads, int headDim, int groups)
    {
        double best = double.MaxValue;
        fixed (long* s = slots)
        {
            var job = new Job { Slots = s, Length = context, RowFloats = kvHeads * headDim, Groups = groups, Threads = Math.Max(1, KernelThreads.Count) };
            for (int i = 0; i < 20; i++)
            {
                long begin = Stopwatch.GetTimestamp();
                for (int l = 0; l < layers; l++)
                {
                    var (k, v) = store.Pointers(l);
                    job.Keys = (float*)k;
                    job.Values = (float*)v;
                    KernelPool.Run(&Body, &job, job.Threads, job.Threads);
                }
                best = Math.Min(best, Stopwatch.GetElapsedTime(begin).TotalSeconds / layers);
            }
        }
        return best;
    }

    private static void Body(void* context, int share)
    {
        ref Job job = ref Unsafe.AsRef<Job>(context);
        int begin = (int)((long)share * job.Length / job.Threads), end = (int)((long)(share + 1) * job.Length / job.Threads);
        float sum = AttentionKernels.ActivePath == AttentionPath.Vector512 && job.RowFloats % 16 == 0
            ? Rows<Vector512<float>>(ref job, begin, end)
            : Rows<Vector256<float>>(ref job, begin, end);
        job.Sink += sum; // keeps the arithmetic alive; the value is meaningless
    }

    /// <summary>2·G FMAs per vector of each row's K and V (the kernel's count), into eight accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Rows<TV>(ref Job job, int begin, int end) where TV : struct
    {
        int w = Unsafe.SizeOf<TV>() / sizeof(float), groups = job.Groups;
        var q = Splat<TV>(1e-3f);
        TV a0 = Splat<TV>(0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int j = begin; j < end; j++)
        {
            long row = job.Slots[j] * job.RowFloats;
            float* k = job.Keys + row, v = job.Values + row;
            for (int c = 0; c + w <= job.RowFloats; c += w) // a row narrower than a whole vector keeps its tail out
            {
                TV x = Unsafe.ReadUnaligned<TV>(k + c), y = Unsafe.ReadUnaligned<TV>(v + c);
                int g = 0;
                for (; g + 4 <= groups; g += 4)
                {
                    a0 = Fma(x, q, a0); a1 = Fma(y, q, a1); a2 = Fma(x, q, a2); a3 = Fma(y, q, a3);
                    a4 = Fma(x, q, a4); a5 = Fma(y, q, a5); a6 = Fma(x, q, a6); a7 = Fma(y, q, a7);
                }
                for (; g < groups; g++)
                {
                    a0 = Fma(x, q, a0);
                    a1 = Fma(y, q, a1);
                }
            }
        }
        return Sum(a0) + Sum(a1) + Sum(a2) + Sum(a3) + Sum(a4) + Sum(a5) + Sum(a6) + Sum(a7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Splat<TV>(float value) where TV : struct =>
        typeof(TV) == typeof(Vector512<float>) ? (TV)(object)Vector512.Create(value) : (TV)(object)Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Fma<TV>(TV x, TV y, TV z) where TV : struct
    {
        if (typeof(TV) == typeof(Vector512<float>))
        {
            var r = Vector512.FusedMultiplyAdd(Unsafe.As<TV, Vector512<float>>(ref x), Unsafe.As<TV, Vector512<float>>(ref y), Unsafe.As<TV, Vector512<float>>(ref z));
            return Unsafe.As<Vector512<float>, TV>(ref r);
        }
        var s = Vector256.FusedMultiplyAdd(Unsafe.As<TV, Vector256<float>>(ref x), Unsafe.As<TV, Vector256<float>>(ref y), Unsafe.As<TV, Vector256<float>>(ref z));
        return Unsafe.As<Vector256<float>, TV>(ref s);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum<TV>(TV value) where TV : struct =>
        typeof(TV) == typeof(Vector512<float>) ? Vector512.Sum(Unsafe.As<TV, Vector512<float>>(ref value)) : Vector256.Sum(Unsafe.As<TV, Vector256<float>>(ref value));
}
