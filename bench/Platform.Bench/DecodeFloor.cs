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
            ? Rows<Lanes512, Vector512<float>>(ref job, begin, end)
            : Rows<Lanes256, Vector256<float>>(ref job, begin, end);
        job.Sink += sum; // keeps the arithmetic alive; the value is meaningless
    }

    /// <summary>2·G FMAs per vector of each row's K and V (the kernel's count), into eight accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Rows<TL, TV>(ref Job job, int begin, int end) where TL : struct, IAttentionLanes<TV> where TV : struct
    {
        int w = TL.Width, groups = job.Groups;
        TV q = TL.Broadcast(1e-3f);
        TV a0 = TL.Zero, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int j = begin; j < end; j++)
        {
            long row = job.Slots[j] * job.RowFloats;
            float* k = job.Keys + row, v = job.Values + row;
            for (int c = 0; c + w <= job.RowFloats; c += w) // a row narrower than a whole vector keeps its tail out
            {
                TV x = TL.Load(k + c), y = TL.Load(v + c);
                int g = 0;
                for (; g + 4 <= groups; g += 4)
                {
                    a0 = TL.MultiplyAdd(x, q, a0); a1 = TL.MultiplyAdd(y, q, a1); a2 = TL.MultiplyAdd(x, q, a2); a3 = TL.MultiplyAdd(y, q, a3);
                    a4 = TL.MultiplyAdd(x, q, a4); a5 = TL.MultiplyAdd(y, q, a5); a6 = TL.MultiplyAdd(x, q, a6); a7 = TL.MultiplyAdd(y, q, a7);
                }
                for (; g < groups; g++)
                {
                    a0 = TL.MultiplyAdd(x, q, a0);
                    a1 = TL.MultiplyAdd(y, q, a1);
                }
            }
        }
        return TL.HorizontalSum(TL.Add(TL.Add(TL.Add(a0, a1), TL.Add(a2, a3)), TL.Add(TL.Add(a4, a5), TL.Add(a6, a7))));
    }
}
