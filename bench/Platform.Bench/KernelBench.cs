// `kernels` mode: weight-read throughput of the decode GEMV kernels against TorchSharp's linear
// and against the machine's streaming-read bandwidth measured in the same run (the decode roofline).
//
// For each weight shape [outFeatures, inFeatures] (TinyLlama-class down_proj 2048x5632,
// gate/up 5632x2048, lm_head 32000x2048) and batch 1/4/8 it times Gemv.MatVecF32, Gemv.MatVecF16,
// Gemv.MatVecBF16, Gemv.MatVecQ8 (int8 rows of QuantizationQ8; its GB/s counts 1.0625 bytes per
// weight) (on the CPU's best kernel path; --vector256 pins AVX2 on an AVX-512 machine)
// and torch.nn.functional.linear (fp32, torch.set_num_threads = KernelThreads.Count) and prints
// GB/s of weights read (weight bytes per call / time per call) and that as a fraction of the
// streaming bandwidth. Weights are torch.randn * 0.02 tensors; our kernels read the very same memory
// (Tensor.bytes). Every shape is replicated until one pass over the fp16 copies is >= 192 MB
// (6x the 32 MB L3; fp32 is twice that), and calls rotate over the copies, so every call streams
// from DRAM as in decode.
// Each cell is the best of 3 trials of >= --seconds (default 0.2 s): the 2 cores are shared,
// so the best trial is the least disturbed one; compare ratios, not absolute numbers. The
// roofline is the better of two streaming probes (start and end of the run, best of 20 each).
using System.Diagnostics;
using Platform.Engine.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Bench;

internal static unsafe class KernelBench
{
    private const long ReplicateBytes = 192L * 1024 * 1024;
    private const int Trials = 3;
    // 512 MB reads take ~7-15 ms; 20 of them give the probe a fair chance at an undisturbed slot.
    private const int BandwidthRepeats = 20;

    public static int Run(string[] args)
    {
        double trialSeconds = 0.2;
        var shapes = new List<(int Out, int In)>();
        var batches = new List<int>();
        bool cached = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--chunk-kb" when i + 1 < args.Length:
                    Gemv.ChunkBytes = int.Parse(args[++i]) * 1024;
                    break;
                case "--shape" when i + 1 < args.Length:
                    string[] dims = args[++i].Split('x');
                    shapes.Add((int.Parse(dims[0]), int.Parse(dims[1])));
                    break;
                case "--batch" when i + 1 < args.Length:
                    batches.Add(int.Parse(args[++i]));
                    break;
                case "--vector256":
                    Gemv.ForceVector256 = true;
                    break;
                case "--cached":
                    cached = true; // one copy per shape: small shapes then run from cache (kernel compute cost)
                    break;
                case "--threads" when i + 1 < args.Length:
                    KernelThreads.Count = int.Parse(args[++i]);
                    break;
                case "--seconds" when i + 1 < args.Length:
                    trialSeconds = double.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture);
                    break;
                default:
                    Console.Error.WriteLine($"kernels: unknown argument '{args[i]}'");
                    return 2;
            }
        }

        int threads = KernelThreads.Count;
        torch.set_num_threads(threads);
        torch.random.manual_seed(42);
        Console.WriteLine($"threads={threads} path={Gemv.ActivePath} chunk={Gemv.ChunkBytes / 1024} KB trial>={trialSeconds}s x{Trials}");
        double bandwidthStart = MemoryBandwidth.MeasureStreamingReadGBps(threads: threads, repeats: BandwidthRepeats);
        Console.WriteLine($"streaming read: {bandwidthStart:F1} GB/s (512 MB, {threads} threads, best of {BandwidthRepeats})");

        MeasureDispatch(threads);

        var rows = new List<(string Shape, int Batch, string Method, double Microseconds, double GBps)>();
        if (shapes.Count == 0)
            shapes.AddRange([(2048, 5632), (5632, 2048), (32000, 2048)]);
        if (batches.Count == 0)
            batches.AddRange([1, 4, 8]);
        foreach ((int outFeatures, int inFeatures) in shapes)
        {
            string shape = $"{outFeatures}x{inFeatures}";
            long elements = (long)outFeatures * inFeatures;
            int copies = cached ? 1 : (int)Math.Max(1, (ReplicateBytes + elements * 2 - 1) / (elements * 2)); // sized on fp16
            using var scope = torch.NewDisposeScope();
            var weights32 = new Tensor[copies];
            var weights16 = new Tensor[copies];
            // Tensor storage is native and never moves, so the pointers stay valid while the tensors live.
            var pointers32 = new nint[copies];
            var pointers16 = new nint[copies];
            var weightsBF16 = new Tensor[copies];
            var pointersBF16 = new nint[copies];
            var weightsQ8 = new Tensor[copies];
            var pointersQ8 = new nint[copies];
            for (int c = 0; c < copies; c++)
            {
                weights32[c] = torch.randn(outFeatures, inFeatures).mul_(0.02);
                weights16[c] = weights32[c].to(ScalarType.Float16);
                weightsBF16[c] = weights32[c].to(ScalarType.BFloat16);
                fixed (byte* pbf16 = weightsBF16[c].bytes)
                    pointersBF16[c] = (nint)pbf16;
                weightsQ8[c] = Platform.Engine.Model.QuantizationQ8.Quantize(weights32[c]);
                fixed (byte* pq8 = weightsQ8[c].bytes)
                    pointersQ8[c] = (nint)pq8;
                fixed (byte* p32 = weights32[c].bytes)
                fixed (byte* p16 = weights16[c].bytes)
                {
                    pointers32[c] = (nint)p32;
                    pointers16[c] = (nint)p16;
                }
            }

            foreach (int batch in batches)
            {
                Tensor x = torch.randn(batch, inFeatures);
                var output = new float[batch * outFeatures];
                float[] input = x.data<float>().ToArray();
                CheckAgainstTorch(weights32[0], weights16[0], x, input, outFeatures, inFeatures, batch);

                fixed (float* xp = input)
                fixed (float* yp = output)
                {
                    float* inputPtr = xp, outputPtr = yp;
                    double f32 = Time(copies, trialSeconds, c =>
                    {
                        Gemv.MatVecF32((float*)pointers32[c], outFeatures, inFeatures, inputPtr, batch, outputPtr);
                    });
                    double f16 = Time(copies, trialSeconds, c =>
                    {
                        Gemv.MatVecF16((Half*)pointers16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr);
                    });
                    double bf16 = Time(copies, trialSeconds, c =>
                    {
                        Gemv.MatVecBF16((ushort*)pointersBF16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr);
                    });
                    double q8 = Time(copies, trialSeconds, c =>
                    {
                        Gemv.MatVecQ8((byte*)pointersQ8[c], outFeatures, inFeatures, inputPtr, batch, outputPtr);
                    });
                    double lin = Time(copies, trialSeconds, c =>
                    {
                        using Tensor y = nn.functional.linear(x, weights32[c]);
                    });
                    rows.Add((shape, batch, "MatVecF32", f32 * 1e6, elements * 4 / f32 / 1e9));
                    rows.Add((shape, batch, "MatVecF16", f16 * 1e6, elements * 2 / f16 / 1e9));
                    rows.Add((shape, batch, "MatVecBF16", bf16 * 1e6, elements * 2 / bf16 / 1e9));
                    rows.Add((shape, batch, "MatVecQ8", q8 * 1e6, weightsQ8[0].numel() / q8 / 1e9));
                    rows.Add((shape, batch, "torch linear f32", lin * 1e6, elements * 4 / lin / 1e9));
                }
            }
        }

        double bandwidthEnd = MemoryBandwidth.MeasureStreamingReadGBps(threads: threads, repeats: BandwidthRepeats);
        double roofline = Math.Max(bandwidthStart, bandwidthEnd);
        Console.WriteLine($"streaming read again: {bandwidthEnd:F1} GB/s; fractions below use {roofline:F1} GB/s");
        Console.WriteLine();
        Console.WriteLine($"{"shape",-11} {"batch",5}  {"method",-17} {"us/call",9} {"GB/s",7} {"of BW",6}");
        foreach (var row in rows)
            Console.WriteLine($"{row.Shape,-11} {row.Batch,5}  {row.Method,-17} {row.Microseconds,9:F1} {row.GBps,7:F1} {row.GBps / roofline,6:P0}");
        return 0;
    }

    /// <summary>Best seconds per call over <see cref="Trials"/> trials, rotating over the weight copies.</summary>
    private static double Time(int copies, double trialSeconds, Action<int> call)
    {
        for (int c = 0; c < copies; c++)
            call(c);
        double best = double.MaxValue;
        for (int trial = 0; trial < Trials; trial++)
        {
            long calls = 0;
            long start = Stopwatch.GetTimestamp();
            long minTicks = (long)(trialSeconds * Stopwatch.Frequency);
            long elapsed;
            do
            {
                for (int c = 0; c < copies; c++)
                    call(c);
                calls += copies;
                elapsed = Stopwatch.GetTimestamp() - start;
            }
            while (elapsed < minTicks);
            best = Math.Min(best, elapsed / (double)Stopwatch.Frequency / calls);
        }
        return best;
    }

    /// <summary>Prints the largest difference between our kernels and torch's linear on the same data.</summary>
    private static void CheckAgainstTorch(Tensor w32, Tensor w16, Tensor x, float[] input, int outFeatures, int inFeatures, int batch)
    {
        using Tensor expected32 = nn.functional.linear(x, w32);
        using Tensor w16up = w16.to(ScalarType.Float32);
        using Tensor expected16 = nn.functional.linear(x, w16up);
        float[] e32 = expected32.data<float>().ToArray();
        float[] e16 = expected16.data<float>().ToArray();
        var got32 = new float[batch * outFeatures];
        var got16 = new float[batch * outFeatures];
        fixed (byte* wp32 = w32.bytes)
        fixed (byte* wp16 = w16.bytes)
        fixed (float* xp = input)
        fixed (float* g32 = got32)
        fixed (float* g16 = got16)
        {
            Gemv.MatVecF32((float*)wp32, outFeatures, inFeatures, xp, batch, g32);
            Gemv.MatVecF16((Half*)wp16, outFeatures, inFeatures, xp, batch, g16);
        }
        double d32 = 0, d16 = 0, scale = 0;
        for (int i = 0; i < e32.Length; i++)
        {
            d32 = Math.Max(d32, Math.Abs(got32[i] - e32[i]));
            d16 = Math.Max(d16, Math.Abs(got16[i] - e16[i]));
            scale = Math.Max(scale, Math.Abs(e32[i]));
        }
        Console.WriteLine($"  check {outFeatures}x{inFeatures} batch {batch}: max |ours - torch| f32 {d32:E1}, f16 {d16:E1} (max |y| {scale:F2})");
    }

    private static void NoOp(void* context, int chunk)
    {
    }

    /// <summary>Per-call cost of fanning 8 empty chunks out to the threads: our pool vs Parallel.For.</summary>
    private static void MeasureDispatch(int threads)
    {
        const int Calls = 20_000;
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        double pool = double.MaxValue, parallelFor = double.MaxValue;
        for (int trial = 0; trial < 3; trial++)
        {
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < Calls; i++)
                KernelPool.Run(&NoOp, null, 8, threads);
            pool = Math.Min(pool, Stopwatch.GetElapsedTime(start).TotalMicroseconds / Calls);
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < Calls; i++)
                Parallel.For(0, 8, options, static _ => { });
            parallelFor = Math.Min(parallelFor, Stopwatch.GetElapsedTime(start).TotalMicroseconds / Calls);
        }
        Console.WriteLine($"dispatch of 8 empty chunks on {threads} threads: KernelPool {pool:F2} us/call, Parallel.For {parallelFor:F2} us/call");
    }
}
