// `prefill` mode: where a long prompt's prefill time goes, piece by piece, on a preset's shapes.
//  * attention: Kernels/FlashAttention.Prefill of one chunk of --chunk queries that ends at --context,
//    over pools of random K/V with shuffled 16-token blocks (the paged layout), GFLOP/s counted as
//    4 · heads · head_dim per causal (query, key) pair;
//  * decode attention: Kernels/PagedAttention.Decode of one query token over the same pools (batch 1),
//    GB/s of K and V read per call, each call over the next layer's pools (PagedKvStore, as the engine
//    allocates them) so that no layer's pools stay in the L3 between its calls, with the blocks shuffled
//    and in order, against the streaming read measured in the same run and against DecodeFloor (the same
//    rows with the kernel's FMAs and nothing else: what the cores can do with those bytes); and batch 8
//    over that one shared context (rows read once for all 8), GFLOP/s against the FMA peak measured in
//    the same run;
//  * linears: each projection of a layer (fused qkv, o, fused gate/up, down) on --chunk token rows,
//    through Projection.Forward (our GEMM up to MaxGemvRows rows, libtorch above) and through
//    libtorch's linear, GFLOP/s = 2 · rows · out · in;
//    Attention also prints GFLOP per CPU-second of this process (its threads' time, which other
//    processes on the cores do not inflate much): the figure to compare on a loaded machine;
//  * the fp32 matmul rate of a 2048³ libtorch GEMM (the same reference `bench engine` uses).
// --vector256 pins the attention kernels to their AVX2 path on an AVX-512 machine; --decode-only
// measures the decode attention alone (for profiling it).
// Every cell is the best of --rounds interleaved rounds (the 2 cores are shared: only ratios in one
// run mean anything). Weights are random; the numbers depend only on the shapes.
using System.Diagnostics;
using Platform.Core.Models;
using Platform.Engine.Kernels;
using Platform.Engine.KvCache;
using Platform.Engine.Model;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Bench;

internal static unsafe class PrefillBench
{
    private const string Usage = "usage: prefill [--preset small|medium] [--context N[,N...]] [--chunk N[,N...]] [--threads N] [--rounds N] [--vector256] [--decode-only]";

    public static int Run(string[] args)
    {
        string preset = "small";
        var contexts = new List<int>();
        var chunks = new List<int>();
        int threads = Environment.ProcessorCount, rounds = 3;
        bool decodeOnly = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: preset = args[++i]; break;
                case "--context" when i + 1 < args.Length: contexts.AddRange(args[++i].Split(',').Select(int.Parse)); break;
                case "--chunk" when i + 1 < args.Length: chunks.AddRange(args[++i].Split(',').Select(int.Parse)); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i]); break;
                case "--vector256": AttentionKernels.ForceVector256 = true; break;
                case "--decode-only": decodeOnly = true; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        if (contexts.Count == 0) contexts.AddRange([8192, 32768]);
        if (chunks.Count == 0) chunks.AddRange([64, 256, 1024]);
        NativeRuntime.Configure();
        KernelThreads.Count = threads;
        torch.set_num_threads(threads);
        var c = RandomModelGenerator.PresetConfig(preset);
        Console.WriteLine($"preset {preset}: hidden {c.HiddenSize}, heads {c.NumHeads}/{c.NumKvHeads}, head_dim {c.HeadDim}, layers {c.NumLayers}; "
            + $"{threads} threads, attention path {AttentionKernels.ActivePath}, best of {rounds} rounds");
        if (!decodeOnly) Console.WriteLine($"fp32 matmul (libtorch, 2048³): {MatmulGflops():F1} GFLOP/s");

        foreach (int context in contexts)
            Attention(c, context, decodeOnly ? [] : chunks, rounds);
        if (!decodeOnly) Linears(c, chunks, rounds);
        return 0;
    }

    private static void Attention(ModelConfig c, int context, List<int> chunks, int rounds)
    {
        const int block = 16;
        int blocks = (context + block - 1) / block;
        long rowFloats = (long)c.NumKvHeads * c.HeadDim, poolFloats = (long)blocks * block * rowFloats;
        // The engine's own pools (PagedKvStore: lazily zeroed, page size as the engine gets it), one per layer.
        using var store = new PagedKvStore(c.NumLayers, blocks, block, c.NumKvHeads, c.HeadDim, ScalarType.Float32);
        var rng = new Random(1);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var (kp, vp) = store.Pointers(l);
            var k = new Span<float>((float*)kp, checked((int)poolFloats));
            var v = new Span<float>((float*)vp, checked((int)poolFloats));
            for (int i = 0; i < k.Length; i++)
            {
                k[i] = (float)(rng.NextDouble() * 2 - 1);
                v[i] = (float)(rng.NextDouble() * 2 - 1);
            }
        }
        var (keys0, values0) = store.Pointers(0);
        float* keys = (float*)keys0, values = (float*)values0;
        var order = Enumerable.Range(0, blocks).OrderBy(_ => rng.Next()).ToArray();
        var slots = new long[context];
        for (int p = 0; p < context; p++) slots[p] = (long)order[p / block] * block + p % block;
        int maxChunk = Math.Max(1, chunks.DefaultIfEmpty(1).Max());
        var query = new float[(long)maxChunk * c.NumHeads * c.HeadDim];
        for (int i = 0; i < query.Length; i++) query[i] = (float)(rng.NextDouble() * 2 - 1);
        var output = new float[query.Length];
        float scale = 1f / MathF.Sqrt(c.HeadDim);
        var best = chunks.ToDictionary(n => n, _ => double.MaxValue);
        var bestCpu = chunks.ToDictionary(n => n, _ => double.MaxValue);
        using var process = Process.GetCurrentProcess();
        for (int r = 0; r < rounds; r++)
            foreach (int n in chunks)
            {
                fixed (float* q = query, o = output)
                fixed (long* s = slots)
                {
                    float* k = keys, v = values;
                    process.Refresh();
                    var cpuBefore = process.TotalProcessorTime;
                    var clock = Stopwatch.StartNew();
                    FlashAttention.Prefill(q, k, v, s, n, context, c.NumHeads, c.NumKvHeads, c.HeadDim, scale, 0, o);
                    best[n] = Math.Min(best[n], clock.Elapsed.TotalSeconds);
                    process.Refresh();
                    bestCpu[n] = Math.Min(bestCpu[n], (process.TotalProcessorTime - cpuBefore).TotalSeconds);
                }
            }
        // Decode attention: one query token per call (batch 1), each call over the next layer's pools as in a
        // decode step (a pool that fits the L3 would flatter a kernel that reads one again and again); the
        // best of --rounds x 20 passes over every layer, rounds interleaved between the shuffled blocks and
        // blocks in order (a fresh engine's pool hands out blocks in order; churn shuffles them).
        var inOrder = Enumerable.Range(0, context).Select(p => (long)p).ToArray();
        double shuffled = double.MaxValue, ordered = double.MaxValue, floor = double.MaxValue;
        for (int r = 0; r < rounds; r++)
        {
            shuffled = Math.Min(shuffled, DecodeAttention(c, store, slots, query, output, scale, context));
            ordered = Math.Min(ordered, DecodeAttention(c, store, inOrder, query, output, scale, context));
            floor = Math.Min(floor, DecodeFloor.Measure(store, c.NumLayers, slots, context, c.NumKvHeads, c.HeadDim, c.NumHeads / c.NumKvHeads));
        }
        double kvBytes = 2.0 * context * rowFloats * sizeof(float);
        double stream = MemoryBandwidth.MeasureStreamingReadGBps(threads: KernelThreads.Count);
        foreach (var (blockOrder, decode) in new[] { ("shuffled", shuffled), ("in order", ordered) })
            Console.WriteLine($"decode attention ctx {context,6} batch 1, blocks {blockOrder,-8}: {decode * 1e6,8:F1} us per layer, "
                + $"{kvBytes / decode / 1e9,6:F1} GB/s of K and V ({kvBytes / decode / 1e9 / stream:P0} of the {stream:F1} GB/s streaming read "
                + $"measured after it), {decode * c.NumLayers * 1e3,6:F2} ms per token (all layers, each its own pools)");
        Console.WriteLine($"decode floor     ctx {context,6} batch 1, blocks shuffled: {floor * 1e6,8:F1} us per layer, {kvBytes / floor / 1e9,6:F1} GB/s "
            + $"({kvBytes / floor / 1e9 / stream:P0} of the read): the same rows and FMAs with nothing else (DecodeFloor); attention at {floor / shuffled:P0} of it");
        // Batch 8 over one shared context (bench engine's batch cells, SCBench's shared-context shape): the kernel
        // reads each row once for all 8 (PlanGroups), so this is compute, counted against the FMA peak.
        double sharedBest = double.MaxValue;
        var sharedQuery = new float[SharedBatch * c.NumHeads * c.HeadDim];
        for (int i = 0; i < sharedQuery.Length; i++) sharedQuery[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int r = 0; r < rounds; r++) sharedBest = Math.Min(sharedBest, DecodeAttention(c, store, slots, sharedQuery, new float[sharedQuery.Length], scale, context, SharedBatch));
        double sharedFlops = 4.0 * c.NumHeads * c.HeadDim * context * SharedBatch, peak = KernelBench.MeasureFmaPeakGflops(KernelThreads.Count);
        Console.WriteLine($"decode attention ctx {context,6} batch {SharedBatch} sharing it: {sharedBest * 1e6,8:F1} us per layer, "
            + $"{sharedFlops / sharedBest / 1e9,6:F1} GFLOP/s ({sharedFlops / sharedBest / 1e9 / peak:P0} of the {peak:F1} GFLOP/s FMA peak measured after it)");
        foreach (int n in chunks)
        {
            int first = context - n;
            double pairs = (double)n * first + n * (n + 1.0) / 2;
            double flops = 4.0 * c.NumHeads * c.HeadDim * pairs;
            Console.WriteLine($"attention ctx {context,6} chunk {n,5}: {best[n] * 1e3,8:F2} ms per layer, {flops / best[n] / 1e9,6:F1} GFLOP/s, "
                + $"{best[n] * c.NumLayers / n * 1e6,7:F1} us per token (all layers); {flops / bestCpu[n] / 1e9,6:F1} GFLOP per CPU-second");
        }
    }

    /// <summary>Sequences of the shared-context decode cell.</summary>
    private const int SharedBatch = 8;

    /// <summary>Best of 20 decode-attention passes over every layer's pools (batch sequences over the same slots), in seconds per layer.</summary>
    private static double DecodeAttention(ModelConfig c, PagedKvStore store, long[] slots, float[] query, float[] output, float scale, int context, int batch = 1)
    {
        double best = double.MaxValue;
        var lengths = Enumerable.Repeat(context, batch).ToArray();
        var offsets = new int[batch];
        fixed (float* q = query, o = output)
        fixed (long* s = slots)
        fixed (int* length = lengths, offset = offsets)
        {
            for (int i = 0; i < 20; i++)
            {
                long begin = Stopwatch.GetTimestamp();
                for (int l = 0; l < c.NumLayers; l++)
                {
                    var (k, v) = store.Pointers(l);
                    PagedAttention.Decode(q, (float*)k, (float*)v, s, offset, length, batch, c.NumHeads, c.NumKvHeads, c.HeadDim, scale, o);
                }
                best = Math.Min(best, Stopwatch.GetElapsedTime(begin).TotalSeconds / c.NumLayers);
            }
        }
        return best;
    }

    private static void Linears(ModelConfig c, List<int> chunks, int rounds)
    {
        using var scope = torch.NewDisposeScope();
        int q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
        var shapes = new (string Name, int Out, int In)[]
        {
            ("qkv", q + 2 * kv, c.HiddenSize), ("o", c.HiddenSize, q), ("gate/up", 2 * c.IntermediateSize, c.HiddenSize), ("down", c.HiddenSize, c.IntermediateSize),
        };
        foreach (var (name, outFeatures, inFeatures) in shapes)
        {
            var weight = torch.randn(outFeatures, inFeatures) * 0.02;
            var projection = new Projection(weight, null);
            foreach (int n in chunks)
            {
                var x = torch.randn(n, inFeatures);
                double ours = double.MaxValue, libtorch = double.MaxValue;
                for (int r = 0; r < rounds; r++)
                {
                    ours = Math.Min(ours, Time(() => projection.Forward(x).Dispose()));
                    libtorch = Math.Min(libtorch, Time(() => projection.ForwardLibtorch(x).Dispose()));
                }
                double flops = 2.0 * n * outFeatures * inFeatures;
                Console.WriteLine($"linear {name,-8} {outFeatures,5}x{inFeatures,-5} rows {n,5}: Projection {flops / ours / 1e9,6:F1} GFLOP/s, libtorch {flops / libtorch / 1e9,6:F1} GFLOP/s");
            }
        }
    }

    /// <summary>Best of several calls (at least 5 and 50 ms) of <paramref name="call"/>, in seconds.</summary>
    private static double Time(Action call)
    {
        call();
        double best = double.MaxValue, total = 0;
        for (int i = 0; i < 5 || total < 0.05; i++)
        {
            var clock = Stopwatch.StartNew();
            call();
            double t = clock.Elapsed.TotalSeconds;
            best = Math.Min(best, t);
            total += t;
        }
        return best;
    }

    private static double MatmulGflops()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.randn(2048, 2048);
        var b = torch.randn(2048, 2048);
        double best = Time(() => torch.matmul(a, b).Dispose());
        return 2.0 * 2048 * 2048 * 2048 / best / 1e9;
    }
}
