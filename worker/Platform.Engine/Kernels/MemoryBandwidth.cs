// Measures the machine's multi-threaded streaming-read bandwidth: the roofline for decode,
// where every generated token streams all weights once. Benchmarks report kernel throughput
// as a fraction of this number measured in the same run (the cores are shared, so absolute
// GB/s drift from run to run; ratios are what compare).
//
// Method: a 64-byte-aligned buffer (default 512 MB, 16x the 32 MB L3 here) is written once so
// every page is really backed (a never-written buffer would read the shared zero page and
// report cache speed); then each thread sums its contiguous slice with 4 independent AVX2
// (or Vector<T>) accumulators, and the sums go to a volatile sink so the JIT cannot drop the
// loads. It issues the same software prefetch 4 KB ahead as the Gemv kernels, so the roofline
// is measured with their access pattern (with and without it measured the same within noise). All threads start together behind a barrier; a repeat's time runs from the barrier
// to the last thread's finish. Best of N repeats, in GB/s (1e9 bytes per second).
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

public static unsafe class MemoryBandwidth
{
    private static float _sink;
    private const int PrefetchFloats = 1024; // 4 KB ahead, like the Gemv kernels

    /// <summary>Sum of everything the last measurement read (kept so the loads are observable).</summary>
    internal static float LastChecksum => Volatile.Read(ref _sink);

    /// <summary>
    /// Best-of-<paramref name="repeats"/> streaming read bandwidth in GB/s over a
    /// <paramref name="bytes"/> buffer read by <paramref name="threads"/> threads
    /// (defaults: 512 MB, <see cref="Environment.ProcessorCount"/> when threads &lt;= 0, 5).
    /// </summary>
    public static double MeasureStreamingReadGBps(long bytes = 512L * 1024 * 1024, int threads = 0, int repeats = 5)
    {
        if (threads <= 0)
            threads = Environment.ProcessorCount;
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1024L * 1024);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);

        // Each slice is a whole number of 128-byte blocks (4 ymm loads per loop iteration).
        long blocks = bytes / 128 / threads;
        long sliceBytes = blocks * 128;
        long total = sliceBytes * threads;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)total, 64);
        try
        {
            for (long offset = 0; offset < total; offset += int.MaxValue / 2)
            {
                long length = Math.Min(total - offset, int.MaxValue / 2) / sizeof(float);
                new Span<float>(buffer + offset, (int)length).Fill(1f);
            }

            using var start = new Barrier(threads + 1);
            using var done = new CountdownEvent(threads);
            var workers = new Thread[threads];
            long[] finishTicks = new long[threads];
            float[] sums = new float[threads];
            bool stop = false;
            for (int t = 0; t < threads; t++)
            {
                int index = t;
                workers[t] = new Thread(() =>
                {
                    while (true)
                    {
                        start.SignalAndWait();
                        if (Volatile.Read(ref stop))
                            return;
                        float sum = ReadSlice(buffer + index * sliceBytes, sliceBytes);
                        finishTicks[index] = Stopwatch.GetTimestamp();
                        sums[index] = sum;
                        done.Signal();
                    }
                })
                { IsBackground = true, Name = $"bandwidth-{t}" };
                workers[t].Start();
            }

            double bestSeconds = double.MaxValue;
            for (int r = 0; r < repeats; r++)
            {
                done.Reset();
                start.SignalAndWait();
                long begin = Stopwatch.GetTimestamp();
                done.Wait();
                long end = finishTicks.Max();
                bestSeconds = Math.Min(bestSeconds, Math.Max(end - begin, 1) / (double)Stopwatch.Frequency);
            }
            Volatile.Write(ref _sink, sums.Sum());
            Volatile.Write(ref stop, true);
            start.SignalAndWait();
            foreach (Thread worker in workers)
                worker.Join();
            return total / bestSeconds / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ReadSlice(byte* start, long bytes)
    {
        float* p = (float*)start;
        long count = bytes / sizeof(float);
        if (Avx.IsSupported)
        {
            Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
            for (long i = 0; i < count; i += 32)
            {
                Sse.Prefetch0(p + i + PrefetchFloats);
                Sse.Prefetch0(p + i + PrefetchFloats + 16);
                a0 = Avx.Add(a0, Avx.LoadAlignedVector256(p + i));
                a1 = Avx.Add(a1, Avx.LoadAlignedVector256(p + i + 8));
                a2 = Avx.Add(a2, Avx.LoadAlignedVector256(p + i + 16));
                a3 = Avx.Add(a3, Avx.LoadAlignedVector256(p + i + 24));
            }
            return Vector256.Sum(Avx.Add(Avx.Add(a0, a1), Avx.Add(a2, a3)));
        }

        int width = Vector<float>.Count;
        Vector<float> v0 = Vector<float>.Zero, v1 = v0;
        long j = 0;
        for (; j + 2 * width <= count; j += 2 * width)
        {
            v0 += Vector.Load(p + j);
            v1 += Vector.Load(p + j + width);
        }
        float sum = Vector.Sum(v0 + v1);
        for (; j < count; j++)
            sum += p[j];
        return sum;
    }
}
