// `engine` mode: prefill and decode throughput of the whole engine (scheduler,
// paged KV, model) on random-weight presets, against the decode roofline
// measured in the same run.
//
// For each preset (small, medium), context C (512, 2K, 8K) and batch B (1, 8, 32):
//  * prefill: B distinct prompts of C tokens submitted together; tokens/s =
//    B·C / time until every request has its first token. Skipped when B·C is
//    above --max-prefill-tokens (a CPU prefills a TinyLlama-shaped model at tens
//    of tokens per second; 32 × 8K would take hours).
//  * decode: one warm-up request computes a C-token context (and one decode step, so
//    the decode kernels are compiled before the measurement), then B requests
//    that share it (all but a distinct last block) decode --decode-tokens each.
//    Decode tokens/s counts tokens after every request has started decoding,
//    over that interval. Sharing the context is what groups of requests over
//    one long document do (SCBench's shared-context shape), and it keeps the
//    prefill cost of the benchmark at one context per cell. The attention kernel
//    reads the shared rows once for all B (PagedAttention.PlanGroups), so such a
//    cell's attention is bound by arithmetic, not by reading B contexts.
//  * bound: the step's roofline (DecodeRoofline): B tokens over the larger of its
//    bytes (all weights but the embedding, the shared context's K/V once and each
//    request's own tail) at the two-core streaming read and its FLOPs (weights
//    and attention, per sequence) at the FMA peak; decode is reported as a
//    fraction of it, with which of the two limits the cell. Batch 1 is bound by
//    memory; shared batch cells at long contexts by arithmetic. Both rates are the
//    best of the measurements at the start and after every cell's decode: on a
//    shared VM the read drifts by a third within minutes, and a single low probe
//    put one cell at 102 % of its "bound". The lines printed per cell use the best
//    so far; the table, JSON and plots the best of the run.
//  * prefill GFLOP/s: weight FLOPs (2 per weight per prompt token, the output head
//    once per request) plus causal attention FLOPs (QKᵀ and PV: 4·layers·heads·
//    head_dim·C(C+1)/2 per request) over the prefill time, beside the fp32 matmul
//    rate of a large libtorch GEMM measured in the same run; both also per CPU-second of
//    this process (on a shared machine the wall rates follow the share of the cores the
//    run got, the per-CPU-second ones much less). TTFT is that prefill
//    time (at batch B, until every request has its first token). Batch 1 prefill
//    is always measured; larger batches only up to --max-prefill-tokens.
// Figures are printed as a table and written as JSON (bench/results/engine-*.json),
// with two PNG charts beside it: decode against context with its bound, prefill
// GFLOP/s against the matmul rate.
// --path generic|native (repeatable) measures each cell on the device-generic
// libtorch path (LlamaModel.Device.cs) and/or the native cpu kernels, one after
// the other in the same run, so the cost of the generic path is known; --device
// cpu|cuda[:N] picks where the engine runs (off cpu only generic applies).
// With --peer-llamacpp DIR and/or --peer-llama2c PATH it also sets the engine beside
// those programs (Peers/PeerBench.cs); given alone, only the peers run; --peer-cases picks
// llama.cpp's rows (e.g. `start` alone: process start to first token against its driver). With cells, llama.cpp
// also runs beside each one (the `context` case, on unless --peer-cases leaves it out): its driver on the f32 GGUF
// of the cell's preset, f32 KV, the cell's context, and at batch B, B sequences over the one prompt (its KV shared),
// measured right after the engine's cell and shown as engine / llama.cpp; --peer-recache reads
// both sides' files into the page cache afresh before each case (PageCacheFolios: each case prints how much of
// each file the cache holds in 2 MB folios, which moves decode speed on these VMs).
using System.Diagnostics;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Bench.Peers;
using Platform.Bench.Plots;
using Platform.Core.Models;
using Platform.Engine;
using Platform.Engine.Kernels;
using Platform.Engine.Scheduling;
using Spectre.Console;

namespace Platform.Bench;

internal static class EngineBench
{
    private sealed record Cell(string Preset, string Path, int Context, int Batch, double? PrefillTokensPerSecond, double? PrefillGflopsPerSecond, double? PrefillGflopsPerCpuSecond, double? TtftSeconds,
        double DecodeTokensPerSecond, double DecodeBoundTokensPerSecond, double DecodeFractionOfBound, long BytesPerDecodeStep, double FlopsPerDecodeStep,
        string BoundBy, double? PeerDecodeTokensPerSecond = null, double? PeerPrefillTokensPerSecond = null);

    private const string Usage = "usage: engine [--preset small|medium]... [--context N[,N...]]... [--batch N[,N...]]... [--decode-tokens N] [--threads N] "
        + "[--max-prefill-tokens N] [--json FILE] [--peer-llamacpp DIR] [--peer-llama2c PATH] [--peer-preset medium] [--peer-tokens N] [--peer-cases f32,bf16,f16,q8_0,start,context] [--peer-recache] [--rounds N] [--device cpu|cuda[:N]] [--path generic|native]...";

    public static async Task<int> Run(string[] args)
    {
        var presets = new List<string>();
        var contexts = new List<int>();
        var batches = new List<int>();
        int decodeTokens = 16, threads = Environment.ProcessorCount;
        long maxPrefill = 16384;
        string? jsonPath = null, llamaCppDir = null, llama2cBinary = null;
        string peerPreset = "medium";
        int peerTokens = 32, rounds = 3;
        var peerCases = new List<string>();
        bool peerRecache = false;
        string device = Platform.Core.Workers.ComputeDevice.CpuName;
        var paths = new List<Platform.Engine.Model.ForwardPath>();
        static IEnumerable<string> List(string value) => value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: presets.AddRange(List(args[++i])); break;
                case "--context" when i + 1 < args.Length: contexts.AddRange(List(args[++i]).Select(int.Parse)); break;
                case "--batch" when i + 1 < args.Length: batches.AddRange(List(args[++i]).Select(int.Parse)); break;
                case "--peer-llamacpp" when i + 1 < args.Length: llamaCppDir = args[++i]; break;
                case "--peer-llama2c" when i + 1 < args.Length: llama2cBinary = args[++i]; break;
                case "--peer-preset" when i + 1 < args.Length: peerPreset = args[++i]; break;
                case "--peer-tokens" when i + 1 < args.Length: peerTokens = int.Parse(args[++i]); break;
                case "--peer-cases" when i + 1 < args.Length: peerCases.AddRange(List(args[++i])); break;
                case "--peer-recache": peerRecache = true; break;
                case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i]); break;
                case "--decode-tokens" when i + 1 < args.Length: decodeTokens = int.Parse(args[++i]); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--max-prefill-tokens" when i + 1 < args.Length: maxPrefill = long.Parse(args[++i]); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                case "--device" when i + 1 < args.Length: device = args[++i]; break;
                case "--path" when i + 1 < args.Length && Enum.TryParse<Platform.Engine.Model.ForwardPath>(args[i + 1], ignoreCase: true, out var path): paths.Add(path); i++; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        if (peerCases.FirstOrDefault(c => !PeerBench.CaseNames.Contains(c, StringComparer.OrdinalIgnoreCase)) is { } unknownCase)
        {
            Console.Error.WriteLine($"--peer-cases: unknown case '{unknownCase}' (cases: {string.Join(',', PeerBench.CaseNames)})");
            return 2;
        }
        bool llamaCppRows = llamaCppDir is not null && PeerBench.AnyRows(peerCases);
        bool peerCells = llamaCppDir is not null && PeerBench.Selects(peerCases, PeerBench.ContextCase);
        PeerReport? peerReport = null;
        if (llamaCppRows || llama2cBinary is not null)
        {
            KernelThreads.Count = threads;
            peerReport = await new PeerBench(peerPreset, threads, peerTokens, rounds, peerCases, peerRecache)
                .RunAsync(llamaCppRows ? llamaCppDir : null, llama2cBinary);
            PeerBench.Print(peerReport);
            if (presets.Count == 0 && contexts.Count == 0 && batches.Count == 0)
            {
                await WriteJson(jsonPath, new { machine = new { cores = Environment.ProcessorCount, threads }, peers = peerReport });
                return 0;
            }
        }
        if (presets.Count == 0) presets.AddRange(["small", "medium"]);
        if (contexts.Count == 0) contexts.AddRange([512, 2048, 8192]);
        if (batches.Count == 0) batches.AddRange([1, 8, 32]);
        if (paths.Count == 0) paths.Add(Platform.Engine.Model.ForwardPath.Native);
        KernelThreads.Count = threads;

        AnsiConsole.MarkupLine("[grey]measuring two-core streaming-read bandwidth…[/]");
        double bandwidth = MemoryBandwidth.MeasureStreamingReadGBps(threads: threads, repeats: 10);
        AnsiConsole.MarkupLine($"streaming read: [bold]{bandwidth:F1} GB/s[/] ({threads} threads)");
        var (matmulGflops, matmulGflopsPerCpuSecond) = MeasureMatmulGflops(threads);
        double fmaPeak = KernelBench.MeasureFmaPeakGflops(threads);
        AnsiConsole.MarkupLine($"FMA peak: [bold]{fmaPeak:F1} GFLOP/s[/] ({threads} threads)");
        AnsiConsole.MarkupLine($"fp32 matmul (libtorch, 2048³): [bold]{matmulGflops:F1} GFLOP/s[/], {matmulGflopsPerCpuSecond:F1} GFLOP per CPU-second");

        // llama.cpp beside each cell (the `context` peer case): its driver on the f32 GGUF of the cell's preset.
        var cellPeer = peerCells ? await LlamaCppPeer.PrepareAsync(llamaCppDir!, PeerBench.CacheDir) : null;
        List<Cell> cells = [];
        foreach (var preset in presets)
        {
            string dir = BenchModels.Ensure(preset);
            string? gguf = cellPeer is null ? null : PeerBench.EnsureGguf(dir, GgmlType.F32);
            int maxContext = contexts.Max() + decodeTokens + 64;
            int maxBatch = batches.Max();
            long kvTokens = (long)maxContext * batches.Max() + maxContext * 2;
            var options = new EngineOptions
            {
                Threads = threads,
                MaxBatchTokens = 2048,
                MaxRunningRequests = Math.Max(64, maxBatch),
                NumKvBlocks = (int)(kvTokens / 16 + 64),
                DefaultSeed = 1,
                Device = device,
            };
            AnsiConsole.MarkupLine($"[grey]loading {preset}…[/]");
            using var engine = LlmEngine.Load(dir, options);
            var c = engine.Config;
            int seed = 0;
            foreach (int asked in contexts)
            {
                // A prompt plus its decoded tokens must fit the model's context (32K presets at --context 32768).
                int context = Math.Min(asked, engine.MaxContextTokens - decodeTokens - 1);
                if (context != asked) AnsiConsole.MarkupLine($"[grey]context {asked} measured as {context}: prompt and {decodeTokens} decoded tokens fit {engine.MaxContextTokens}[/]");
                foreach (int batch in batches)
                foreach (var path in paths)
                {
                    engine.ForwardPath = path;
                    double? prefillSeconds = null, prefillCpuSeconds = null;
                    if (batch == 1 || (long)batch * context <= maxPrefill)
                        (prefillSeconds, prefillCpuSeconds) = await MeasurePrefill(engine, batch, context, ++seed);
                    double? prefill = batch * context / prefillSeconds;
                    double? gflops = batch * PrefillFlops(c, context) / prefillSeconds / 1e9;
                    double? gflopsPerCpuSecond = batch * PrefillFlops(c, context) / prefillCpuSeconds / 1e9;
                    double decode = await MeasureDecode(engine, batch, context, decodeTokens, ++seed);
                    long stepBytes = DecodeRoofline.StepBytes(c, context, batch);
                    double stepFlops = DecodeRoofline.StepFlops(c, context, batch);
                    bandwidth = Math.Max(bandwidth, MemoryBandwidth.MeasureStreamingReadGBps(threads: threads, repeats: 5));
                    fmaPeak = Math.Max(fmaPeak, KernelBench.MeasureFmaPeakGflops(threads));
                    var (bound, limitedBy) = DecodeRoofline.Ceiling(batch, stepBytes, stepFlops, bandwidth, fmaPeak);
                    var cell = new Cell(preset, path.ToString().ToLowerInvariant(), context, batch, prefill, gflops, gflopsPerCpuSecond, prefillSeconds, decode, bound, decode / bound,
                        stepBytes, stepFlops, limitedBy);
                    if (cellPeer is not null && path == paths[0])
                    {
                        // The same context and batch in llama.cpp, right after the engine's (f32 KV, as the engine's; the B
                        // sequences share the prompt's KV, as the engine's requests share its blocks). Prefill is compared at
                        // batch 1 only, where both evaluate one prompt.
                        // A failing peer (say, out of memory at a large batch × context) leaves its cell empty, not the run.
                        try
                        {
                            var theirs = await cellPeer.GenerateAsync(gguf!, BenchModels.RandomPrompt(dir, context, ++seed), decodeTokens, threads, "f32", batch);
                            cell = cell with
                            {
                                PeerDecodeTokensPerSecond = theirs.DecodeTokensPerSecond,
                                PeerPrefillTokensPerSecond = batch == 1 ? context / (theirs.FirstTokenMs / 1000) : null,
                            };
                            AnsiConsole.MarkupLine($"  llama.cpp ctx {context,5} batch {batch,2}: decode {theirs.DecodeTokensPerSecond,8:F1} tok/s"
                                + (cell.PeerPrefillTokensPerSecond is { } pp ? $", prefill {pp:F1} tok/s" : ""));
                        }
                        catch (Exception e) when (e is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
                        {
                            AnsiConsole.MarkupLine($"  [yellow]llama.cpp ctx {context,5} batch {batch,2}: no figure: {Markup.Escape(e.Message)}[/]");
                        }
                    }
                    cells.Add(cell);
                    AnsiConsole.MarkupLine($"{preset} {cell.Path} ctx {context,5} batch {batch,2}: prefill {(prefill is { } p ? $"{p,8:F1} tok/s, {gflops,6:F1} GFLOP/s ({gflopsPerCpuSecond:F1} per CPU-second), TTFT {prefillSeconds,7:F2} s" : "    skip")}, "
                        + $"decode {decode,8:F1} tok/s = {decode / bound:P0} of bound {bound:F1} ({cell.BoundBy})");
                }
            }
        }

        // Every cell against the best bandwidth and FMA peak of the whole run (see the header).
        cells = [.. cells.Select(cell =>
        {
            var (bound, limitedBy) = DecodeRoofline.Ceiling(cell.Batch, cell.BytesPerDecodeStep, cell.FlopsPerDecodeStep, bandwidth, fmaPeak);
            return cell with { DecodeBoundTokensPerSecond = bound, DecodeFractionOfBound = cell.DecodeTokensPerSecond / bound, BoundBy = limitedBy };
        })];
        var table = new Table().AddColumns("preset", "path", "context", "batch", "prefill tok/s", "prefill GFLOP/s", "TTFT s", "decode tok/s", "bound tok/s", "of bound", "bound by", "decode vs batch 1");
        foreach (var cell in cells)
        {
            var b1 = cells.FirstOrDefault(x => x.Preset == cell.Preset && x.Path == cell.Path && x.Context == cell.Context && x.Batch == 1);
            table.AddRow(cell.Preset, cell.Path, cell.Context.ToString(), cell.Batch.ToString(),
                cell.PrefillTokensPerSecond is { } p ? p.ToString("F1") : "skipped",
                cell.PrefillGflopsPerSecond is { } g ? g.ToString("F1") : "-",
                cell.TtftSeconds is { } t ? t.ToString("F2") : "-",
                cell.DecodeTokensPerSecond.ToString("F1"), cell.DecodeBoundTokensPerSecond.ToString("F1"),
                cell.DecodeFractionOfBound.ToString("P0"), cell.BoundBy, b1 is null ? "" : (cell.DecodeTokensPerSecond / b1.DecodeTokensPerSecond).ToString("F1") + "×");
        }
        AnsiConsole.Write(table);
        if (cells.Any(x => x.PeerDecodeTokensPerSecond is not null))
        {
            var beside = new Table().AddColumns("preset", "context", "batch", "engine decode tok/s", "llama.cpp decode tok/s", "engine / llama.cpp",
                "engine prefill tok/s", "llama.cpp prefill tok/s");
            foreach (var cell in cells.Where(x => x.PeerDecodeTokensPerSecond is not null))
                beside.AddRow(cell.Preset, cell.Context.ToString(), cell.Batch.ToString(), cell.DecodeTokensPerSecond.ToString("F1"),
                    cell.PeerDecodeTokensPerSecond!.Value.ToString("F1"), (cell.DecodeTokensPerSecond / cell.PeerDecodeTokensPerSecond.Value).ToString("F2") + "×",
                    cell.Batch == 1 && cell.PrefillTokensPerSecond is { } p ? p.ToString("F1") : "-",
                    cell.PeerPrefillTokensPerSecond is { } q ? q.ToString("F1") : "-");
            AnsiConsole.Write(beside);
            AnsiConsole.MarkupLine("[grey]llama.cpp: the same weights as f32 GGUF, f32 KV, flash attention as its default picks, the same threads; each cell measured right after the engine's[/]");
        }
        AnsiConsole.MarkupLine($"fp32 matmul rate {matmulGflops:F1} GFLOP/s ({matmulGflopsPerCpuSecond:F1} per CPU-second), streaming read {bandwidth:F1} GB/s and FMA peak {fmaPeak:F1} GFLOP/s (best of the run), {threads} threads");

        jsonPath = await WriteJson(jsonPath, new
        {
            machine = new { cores = Environment.ProcessorCount, threads, streaming_read_gbps = bandwidth, fma_peak_gflops = fmaPeak, matmul_gflops = matmulGflops, matmul_gflops_per_cpu_second = matmulGflopsPerCpuSecond },
            cells,
            peers = peerReport,
        });
        var points = cells.Select(x => new SweepPoint(x.Preset, x.Batch, x.Context, x.DecodeTokensPerSecond, x.DecodeBoundTokensPerSecond, x.PrefillGflopsPerSecond,
            x.PeerDecodeTokensPerSecond)).ToList();
        string caption = $"{Environment.ProcessorCount} cores, {threads} threads, streaming read {bandwidth:F1} GB/s, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC";
        string decodePng = Path.ChangeExtension(jsonPath, ".decode.png"), prefillPng = Path.ChangeExtension(jsonPath, ".prefill.png");
        EngineSweepPlots.WriteDecode(decodePng, points, caption);
        EngineSweepPlots.WritePrefill(prefillPng, points, matmulGflops, caption);
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(decodePng)}, {Markup.Escape(prefillPng)}[/]");
        return 0;
    }

    private static async Task<string> WriteJson(string? jsonPath, object content)
    {
        jsonPath ??= Path.Combine("bench", "results", $"engine-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(content,
            new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return jsonPath;
    }

    /// <summary>FLOPs of one request's prefill of <paramref name="context"/> tokens: every projection per token, the head once, causal attention.</summary>
    internal static double PrefillFlops(ModelConfig c, int context)
    {
        double weights = 2.0 * c.NumLayers * DecodeRoofline.LayerParameters(c) * context + 2.0 * c.VocabSize * c.HiddenSize;
        double attention = 4.0 * c.NumLayers * c.NumHeads * c.HeadDim * (context * (context + 1.0) / 2);
        return weights + attention;
    }

    /// <summary>
    /// Best of five fp32 2048×2048 matmuls in libtorch with the bench's threads, in GFLOP/s of wall time and per CPU-second
    /// of this process (the rate per core actually given; on a shared machine the figure to set prefill's beside).
    /// </summary>
    private static (double Wall, double PerCpuSecond) MeasureMatmulGflops(int threads)
    {
        const int n = 2048;
        TorchSharp.torch.set_num_threads(threads);
        using var scope = TorchSharp.torch.NewDisposeScope();
        var a = TorchSharp.torch.randn(n, n);
        var b = TorchSharp.torch.randn(n, n);
        TorchSharp.torch.matmul(a, b).Dispose();
        double best = double.MaxValue, bestCpu = double.MaxValue;
        using var process = Process.GetCurrentProcess();
        for (int i = 0; i < 5; i++)
        {
            process.Refresh();
            var cpuBefore = process.TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            TorchSharp.torch.matmul(a, b).Dispose();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
            process.Refresh();
            bestCpu = Math.Min(bestCpu, (process.TotalProcessorTime - cpuBefore).TotalSeconds);
        }
        double flops = 2.0 * n * n * n;
        return (flops / best / 1e9, flops / bestCpu / 1e9);
    }

    private static List<int> RandomTokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(0, Math.Min(vocab, 256))).ToList();
    }

    /// <summary>
    /// Seconds until every one of <paramref name="batch"/> fresh prompts of <paramref name="context"/> tokens has its first
    /// token, and the CPU-seconds this process used meanwhile.
    /// </summary>
    private static async Task<(double Seconds, double CpuSeconds)> MeasurePrefill(LlmEngine engine, int batch, int context, int seed)
    {
        var sampling = new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true };
        using var process = Process.GetCurrentProcess();
        var cpuBefore = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, batch).Select(async b =>
        {
            await foreach (var _ in engine.GenerateAsync(new GenerationRequest(RandomTokens(context, engine.Config.VocabSize, seed * 1000 + b), sampling)))
            {
            }
        }));
        double seconds = sw.Elapsed.TotalSeconds;
        process.Refresh();
        return (seconds, (process.TotalProcessorTime - cpuBefore).TotalSeconds);
    }

    private static async Task<double> MeasureDecode(LlmEngine engine, int batch, int context, int decodeTokens, int seed)
    {
        var shared = RandomTokens(context - DecodeRoofline.DistinctTail, engine.Config.VocabSize, seed);
        // Two tokens: the prefill's first token and one decode step, so the decode kernels are compiled before
        // the measured steps (a 16-token measurement otherwise pays their JIT time).
        var warm = new SamplingParams { MaxTokens = 2, Temperature = 0, IgnoreEos = true };
        await foreach (var _ in engine.GenerateAsync(new GenerationRequest(shared, warm)))
        {
        }
        var sampling = new SamplingParams { MaxTokens = decodeTokens, Temperature = 0, IgnoreEos = true };
        var firstTokens = new TaskCompletionSource();
        int started = 0;
        long afterStart = 0;
        var sw = Stopwatch.StartNew();
        double startedAt = 0;
        await Task.WhenAll(Enumerable.Range(0, batch).Select(async b =>
        {
            var prompt = shared.Concat(RandomTokens(DecodeRoofline.DistinctTail, engine.Config.VocabSize, seed * 7919 + b)).ToList();
            bool first = true;
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling)))
            {
                if (chunk.TokenIds.Count == 0) continue;  // a progress chunk
                if (first)
                {
                    first = false;
                    if (Interlocked.Increment(ref started) == batch)
                    {
                        startedAt = sw.Elapsed.TotalSeconds;
                        firstTokens.SetResult();
                    }
                    continue;
                }
                if (firstTokens.Task.IsCompleted) Interlocked.Add(ref afterStart, chunk.TokenIds.Count);
            }
        }));
        double elapsed = sw.Elapsed.TotalSeconds - startedAt;
        return afterStart / elapsed;
    }
}
