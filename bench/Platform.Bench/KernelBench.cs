// `kernels` mode: the decode kernels (Gemv for 1..16 token rows, Gemm's tiles for any batch) against
// TorchSharp's linear, the machine's streaming-read bandwidth (the roofline of small batches) and its
// FMA peak (the roofline of large ones), both measured in the same run.
//
// For each weight shape [outFeatures, inFeatures] (TinyLlama-1.1B: q/o 2048x2048, fused gate/up
// 11264x2048, down 2048x5632, lm_head 32000x2048) and batch 1/2/4/8/16/32/64 it times Gemv.MatVecF32
// and MatVecBF16 (batch <= 16; fp32 also with the weights 48 bytes past a cache line, as mapped
// safetensors tensors start), Gemm.MultiplyF32 and MultiplyBF16 with the GEMV crossover switched off
// (so small batches show both kernels; --f16 adds the f16 GEMV and Gemm.MultiplyF16; --avx2-beside
// times the AVX2 GEMVs in the same rounds on an AVX-512 CPU), the int8 GEMV (MatVecQ8, integer
// dots on quantized activations) beside the widening int8 GEMV it replaced (QuantizationQ8 rows of the
// same weights; GB/s count their 1.0625 bytes per weight), and torch.nn.functional.linear
// (fp32, torch.set_num_threads = KernelThreads.Count), all on the CPU's best kernel path (--vector256
// pins AVX2 on an AVX-512 machine). It prints GB/s of weights read and its fraction of the streaming
// bandwidth, GFLOP/s (2 x batch x out x in per call) and its fraction of the FMA peak (every thread
// running an FMA-only loop of the active path's width), and the speed ratio against torch's linear.
// Weights are torch.randn * 0.02 tensors; our kernels read the very same memory (Tensor.bytes).
// Every shape is replicated until one pass over the 16-bit copies is >= 192 MB (6x the 32 MB L3; fp32
// is twice that), and calls rotate over the copies, so every call streams from DRAM as in decode.
// Each cell is the best of 3 trials of >= --seconds (default 0.2 s), the methods of a cell timed in
// interleaved rounds: the 2 cores are shared, so the best trial is the least disturbed one; compare
// ratios, not absolute numbers. Each roofline is the better of two probes (start and end of the run).
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
        bool withF16 = false;
        bool withAvx2Beside = false;
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
                case "--kblock" when i + 1 < args.Length:
                    Gemm.KBlock = int.Parse(args[++i]);
                    break;
                case "--f16":
                    withF16 = true;
                    break;
                case "--avx2-beside":
                    withAvx2Beside = true;
                    Gemv.ForceVector512 = true; // the plain rows then are the AVX-512 kernels, even where FloatPath prefers AVX2
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

        double peakStart = MeasureFmaPeakGflops(threads);
        Console.WriteLine($"FMA peak: {peakStart:F1} GFLOP/s ({threads} threads, {(Gemv.ActivePath == GemvPath.Vector512 ? "zmm" : "ymm")} FMA-only loop, best of {PeakRepeats})");

        var rows = new List<Cell>();
        if (shapes.Count == 0)
            shapes.AddRange([(2048, 2048), (11264, 2048), (2048, 5632), (32000, 2048)]);
        if (batches.Count == 0)
            batches.AddRange([1, 2, 4, 8, 16, 32, 64]);
        foreach ((int outFeatures, int inFeatures) in shapes)
        {
            string shape = $"{outFeatures}x{inFeatures}";
            long elements = (long)outFeatures * inFeatures;
            int copies = cached ? 1 : (int)Math.Max(1, (ReplicateBytes + elements * 2 - 1) / (elements * 2)); // sized on 16-bit weights
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
            // The fp32 weights again, 48 bytes past a cache line, as a tensor mapped from safetensors (8-byte
            // aligned offsets) may start; "gemv f32 +48B" reads them.
            var offsetTensors = new Tensor[copies];
            var pointersOffset = new nint[copies];
            bool withInt8 = QuantizationQ8.Supports(inFeatures);
            for (int c = 0; c < copies; c++)
            {
                weights32[c] = torch.randn(outFeatures, inFeatures).mul_(0.02);
                weights16[c] = weights32[c].to(ScalarType.Float16);
                weightsBF16[c] = weights32[c].to(ScalarType.BFloat16);
                fixed (byte* pbf16 = weightsBF16[c].bytes)
                    pointersBF16[c] = (nint)pbf16;
                if (withInt8)
                {
                    weightsQ8[c] = QuantizationQ8.Quantize(weights32[c]);
                    fixed (byte* pq8 = weightsQ8[c].bytes)
                        pointersQ8[c] = (nint)pq8;
                }
                offsetTensors[c] = torch.zeros(elements + 16);
                offsetTensors[c].narrow(0, 12, elements).copy_(weights32[c].flatten());
                fixed (byte* po = offsetTensors[c].bytes)
                    pointersOffset[c] = (nint)(po + 48);
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
                CheckAgainstTorch(weights32[0], weights16[0], weightsBF16[0], x, input, outFeatures, inFeatures, batch);

                fixed (float* xp = input)
                fixed (float* yp = output)
                {
                    float* inputPtr = xp, outputPtr = yp;
                    var methods = new List<(string Name, long WeightBytes, Action<int> Call)>();
                    if (batch <= MaxGemvBatch)
                    {
                        methods.Add(("gemv f32", elements * 4, c => Gemv.MatVecF32((float*)pointers32[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                        methods.Add(("gemv f32 +48B", elements * 4, c => Gemv.MatVecF32((float*)pointersOffset[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                        methods.Add(("gemv bf16", elements * 2, c => Gemv.MatVecBF16((ushort*)pointersBF16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                        if (withF16)
                            methods.Add(("gemv f16", elements * 2, c => Gemv.MatVecF16((Half*)pointers16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                        if (withAvx2Beside && Gemv.ActivePath == GemvPath.Vector512)
                        {
                            // The AVX2 kernels in the same rounds, for the per-CPU question which width streams faster.
                            methods.Add(("gemv f32 avx2", elements * 4, c => OnAvx2(() => Gemv.MatVecF32((float*)pointers32[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                            methods.Add(("gemv bf16 avx2", elements * 2, c => OnAvx2(() => Gemv.MatVecBF16((ushort*)pointersBF16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                            if (withInt8)
                                methods.Add(("gemv int8 avx2", QuantizationQ8.RowBytes(inFeatures) * outFeatures, c => OnAvx2(() => Gemv.MatVecQ8((byte*)pointersQ8[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                            if (withF16)
                                methods.Add(("gemv f16 avx2", elements * 2, c => OnAvx2(() => Gemv.MatVecF16((Half*)pointers16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                        }
                        if (withInt8)
                        {
                            // int8: the integer-dot GEMV (what decode runs) and the widening one it replaced, same rows.
                            long q8Bytes = QuantizationQ8.RowBytes(inFeatures) * outFeatures;
                            methods.Add(("gemv int8", q8Bytes, c => Gemv.MatVecQ8((byte*)pointersQ8[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                            methods.Add(("gemv int8 widen", q8Bytes, c => Gemv.MatVecQ8Widening((byte*)pointersQ8[c], outFeatures, inFeatures, inputPtr, batch, outputPtr)));
                        }
                    }
                    methods.Add(("gemm f32", elements * 4, c => OnGemmTiles(() => Gemm.MultiplyF32((float*)pointers32[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                    methods.Add(("gemm bf16", elements * 2, c => OnGemmTiles(() => Gemm.MultiplyBF16((ushort*)pointersBF16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                    if (withF16)
                        methods.Add(("gemm f16", elements * 2, c => OnGemmTiles(() => Gemm.MultiplyF16((Half*)pointers16[c], outFeatures, inFeatures, inputPtr, batch, outputPtr))));
                    methods.Add(("torch linear f32", elements * 4, c =>
                    {
                        using Tensor y = nn.functional.linear(x, weights32[c]);
                    }));
                    double[] seconds = TimeInterleaved(copies, trialSeconds, methods.Select(m => m.Call).ToArray());
                    double torchSeconds = seconds[^1];
                    for (int m = 0; m < methods.Count; m++)
                    {
                        double gflops = 2.0 * elements * batch / seconds[m] / 1e9;
                        rows.Add(new Cell(shape, batch, methods[m].Name, seconds[m] * 1e6, methods[m].WeightBytes / seconds[m] / 1e9, gflops, torchSeconds / seconds[m]));
                    }
                }
            }
        }

        double bandwidthEnd = MemoryBandwidth.MeasureStreamingReadGBps(threads: threads, repeats: BandwidthRepeats);
        double roofline = Math.Max(bandwidthStart, bandwidthEnd);
        double peakEnd = MeasureFmaPeakGflops(threads);
        double peak = Math.Max(peakStart, peakEnd);
        Console.WriteLine($"streaming read again: {bandwidthEnd:F1} GB/s; fractions below use {roofline:F1} GB/s");
        Console.WriteLine($"FMA peak again: {peakEnd:F1} GFLOP/s; fractions below use {peak:F1} GFLOP/s");
        Console.WriteLine();
        Console.WriteLine($"{"shape",-11} {"batch",5}  {"method",-17} {"us/call",9} {"GB/s",7} {"of BW",6} {"GFLOP/s",8} {"of peak",7} {"x torch",7}");
        foreach (var row in rows)
            Console.WriteLine($"{row.Shape,-11} {row.Batch,5}  {row.Method,-17} {row.Microseconds,9:F1} {row.GBps,7:F1} {row.GBps / roofline,6:P0} {row.Gflops,8:F1} {row.Gflops / peak,7:P0} {row.VersusTorch,7:F2}");
        return 0;
    }

    /// <summary>Largest batch the GEMV rows are timed for (its design range).</summary>
    private const int MaxGemvBatch = 16;

    private sealed record Cell(string Shape, int Batch, string Method, double Microseconds, double GBps, double Gflops, double VersusTorch);

    /// <summary>Runs a GEMV call on the AVX2 kernels (ForceVector256), then back to the widest.</summary>
    private static void OnAvx2(Action call)
    {
        Gemv.ForceVector256 = true;
        try
        {
            call();
        }
        finally
        {
            Gemv.ForceVector256 = false;
        }
    }

    /// <summary>Runs <paramref name="call"/> with the GEMM tiles for every batch (no GEMV crossover), so small batches show both kernels.</summary>
    private static void OnGemmTiles(Action call)
    {
        int savedF32 = Gemm.GemvRowsLimitF32, savedNarrow = Gemm.GemvRowsLimitNarrow, savedQ8 = Gemm.GemvRowsLimitQ8;
        Gemm.GemvRowsLimitF32 = 0;
        Gemm.GemvRowsLimitNarrow = 0;
        Gemm.GemvRowsLimitQ8 = 0;
        try
        {
            call();
        }
        finally
        {
            Gemm.GemvRowsLimitF32 = savedF32;
            Gemm.GemvRowsLimitNarrow = savedNarrow;
            Gemm.GemvRowsLimitQ8 = savedQ8;
        }
    }

    /// <summary>
    /// Best seconds per call of each method over <see cref="Trials"/> rounds; each round times every
    /// method once in turn (interleaved, so a noisy neighbour hits all of them alike), rotating over the weight copies.
    /// </summary>
    private static double[] TimeInterleaved(int copies, double trialSeconds, Action<int>[] calls)
    {
        var best = Enumerable.Repeat(double.MaxValue, calls.Length).ToArray();
        foreach (var call in calls)
            for (int c = 0; c < copies; c++)
                call(c);
        for (int trial = 0; trial < Trials; trial++)
            for (int m = 0; m < calls.Length; m++)
                best[m] = Math.Min(best[m], Time(copies, trialSeconds, calls[m]));
        return best;
    }

    private const int PeakRepeats = 5;
    private const long PeakIterations = 20_000_000;
    private static float _peakSink;

    /// <summary>
    /// The FMA roofline: <paramref name="threads"/> threads each run a loop of nothing but independent
    /// FMAs (12 accumulator chains, enough to cover FMA latency x pipes) on the active path's vector width;
    /// best of <see cref="PeakRepeats"/>, in GFLOP/s (an FMA is 2 flops per lane).
    /// </summary>
    internal static double MeasureFmaPeakGflops(int threads)
    {
        bool wide = Gemv.ActivePath == GemvPath.Vector512;
        int lanes = wide ? 16 : 8;
        double best = 0;
        for (int repeat = 0; repeat < PeakRepeats; repeat++)
        {
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            for (int t = 0; t < threads; t++)
            {
                workers[t] = new Thread(() =>
                {
                    start.SignalAndWait();
                    float sum = wide ? FmaLoop512(PeakIterations) : FmaLoop256(PeakIterations);
                    Interlocked.Exchange(ref _peakSink, sum);
                });
                workers[t].Start();
            }
            start.SignalAndWait();
            long begin = Stopwatch.GetTimestamp();
            foreach (var worker in workers)
                worker.Join();
            double elapsed = Stopwatch.GetElapsedTime(begin).TotalSeconds;
            best = Math.Max(best, 2.0 * lanes * 12 * PeakIterations * threads / elapsed / 1e9);
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop512(long iterations)
    {
        var m = Vector512.Create(0.999f);
        var add = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, add);
            a1 = Avx512F.FusedMultiplyAdd(a1, m, add);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, add);
            a3 = Avx512F.FusedMultiplyAdd(a3, m, add);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, add);
            a5 = Avx512F.FusedMultiplyAdd(a5, m, add);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, add);
            a7 = Avx512F.FusedMultiplyAdd(a7, m, add);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, add);
            a9 = Avx512F.FusedMultiplyAdd(a9, m, add);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, add);
            a11 = Avx512F.FusedMultiplyAdd(a11, m, add);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop256(long iterations)
    {
        var m = Vector256.Create(0.999f);
        var add = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, add);
            a1 = Fma.MultiplyAdd(a1, m, add);
            a2 = Fma.MultiplyAdd(a2, m, add);
            a3 = Fma.MultiplyAdd(a3, m, add);
            a4 = Fma.MultiplyAdd(a4, m, add);
            a5 = Fma.MultiplyAdd(a5, m, add);
            a6 = Fma.MultiplyAdd(a6, m, add);
            a7 = Fma.MultiplyAdd(a7, m, add);
            a8 = Fma.MultiplyAdd(a8, m, add);
            a9 = Fma.MultiplyAdd(a9, m, add);
            a10 = Fma.MultiplyAdd(a10, m, add);
            a11 = Fma.MultiplyAdd(a11, m, add);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    /// <summary>Seconds per call of one trial of at least <paramref name="trialSeconds"/>, rotating over the weight copies.</summary>
    private static double Time(int copies, double trialSeconds, Action<int> call)
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
        return elapsed / (double)Stopwatch.Frequency / calls;
    }

    /// <summary>Prints the largest difference between our kernels (the GEMV where its batch range allows, the GEMM tiles always) and torch's linear on the same data.</summary>
    private static void CheckAgainstTorch(Tensor w32, Tensor w16, Tensor wbf16, Tensor x, float[] input, int outFeatures, int inFeatures, int batch)
    {
        using Tensor expected32 = nn.functional.linear(x, w32);
        using Tensor w16up = w16.to(ScalarType.Float32);
        using Tensor expected16 = nn.functional.linear(x, w16up);
        using Tensor wbf16up = wbf16.to(ScalarType.Float32);
        using Tensor expectedBF16 = nn.functional.linear(x, wbf16up);
        float[] e32 = expected32.data<float>().ToArray();
        float[] e16 = expected16.data<float>().ToArray();
        float[] ebf16 = expectedBF16.data<float>().ToArray();
        var got = new float[batch * outFeatures];
        double scale = e32.Max(Math.Abs);
        var report = new List<string>();
        fixed (byte* wp32 = w32.bytes)
        fixed (byte* wp16 = w16.bytes)
        fixed (byte* wpbf16 = wbf16.bytes)
        fixed (float* xp = input)
        fixed (float* g = got)
        {
            float* w32p = (float*)wp32, outp = g, xin = xp;
            Half* w16p = (Half*)wp16;
            ushort* wbf16p = (ushort*)wpbf16;
            if (batch <= MaxGemvBatch)
            {
                Gemv.MatVecF32(w32p, outFeatures, inFeatures, xin, batch, outp);
                report.Add($"gemv f32 {MaxDifference(got, e32):E1}");
                Gemv.MatVecF16(w16p, outFeatures, inFeatures, xin, batch, outp);
                report.Add($"gemv f16 {MaxDifference(got, e16):E1}");
            }
            OnGemmTiles(() => Gemm.MultiplyF32(w32p, outFeatures, inFeatures, xin, batch, outp));
            report.Add($"gemm f32 {MaxDifference(got, e32):E1}");
            OnGemmTiles(() => Gemm.MultiplyBF16(wbf16p, outFeatures, inFeatures, xin, batch, outp));
            report.Add($"gemm bf16 {MaxDifference(got, ebf16):E1}");
            OnGemmTiles(() => Gemm.MultiplyF16(w16p, outFeatures, inFeatures, xin, batch, outp));
            report.Add($"gemm f16 {MaxDifference(got, e16):E1}");
        }
        Console.WriteLine($"  check {outFeatures}x{inFeatures} batch {batch}: max |ours - torch| {string.Join(", ", report)} (max |y| {scale:F2})");
    }

    private static double MaxDifference(float[] got, float[] expected)
    {
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
            worst = Math.Max(worst, Math.Abs(got[i] - expected[i]));
        return worst;
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
