// `engine` mode: prefill and decode throughput of the whole engine (scheduler,
// paged KV, model) on random-weight presets, against the decode roofline
// measured in the same run.
//
// For each preset (small, medium), context C (512, 2K, 8K) and batch B (1, 8, 32):
//  * prefill: B distinct prompts of C tokens submitted together; tokens/s =
//    B·C / time until every request has its first token. Skipped when B·C is
//    above --max-prefill-tokens (a CPU prefills a TinyLlama-shaped model at tens
//    of tokens per second; 32 × 8K would take hours).
//  * decode: one warm-up request computes a C-token context, then B requests
//    that share it (all but a distinct last block) decode --decode-tokens each.
//    Decode tokens/s counts tokens after every request has started decoding,
//    over that interval. Sharing the context is what groups of requests over
//    one long document do (SCBench's shared-context shape), and it keeps the
//    prefill cost of the benchmark at one context per cell; attention still
//    reads B full contexts per step.
//  * bound: bytes read per decode step (all weights but the embedding, plus the
//    KV of B contexts) divided by the two-core streaming-read bandwidth, as
//    tokens/s; decode is reported as a fraction of it.
// --path generic|native (repeatable) measures each cell on the device-generic
// libtorch path (LlamaModel.Device.cs) and/or the native cpu kernels, one after
// the other in the same run, so the cost of the generic path is known; --device
// cpu|cuda[:N] picks where the engine runs (off cpu only generic applies).
// Figures are printed as a table and written as JSON (bench/results/engine-*.json).
using System.Diagnostics;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Core.Models;
using Platform.Engine;
using Platform.Engine.Kernels;
using Platform.Engine.Scheduling;
using Spectre.Console;

namespace Platform.Bench;

internal static class EngineBench
{
    private sealed record Cell(string Preset, string Path, int Context, int Batch, double? PrefillTokensPerSecond, double DecodeTokensPerSecond,
        double DecodeBoundTokensPerSecond, double DecodeFractionOfBound, long BytesPerDecodeStep);

    public static async Task<int> Run(string[] args)
    {
        var presets = new List<string>();
        var contexts = new List<int>();
        var batches = new List<int>();
        int decodeTokens = 16, threads = Environment.ProcessorCount;
        long maxPrefill = 16384;
        string? jsonPath = null;
        string device = Platform.Core.Workers.ComputeDevice.CpuName;
        var paths = new List<Platform.Engine.Model.ForwardPath>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: presets.Add(args[++i]); break;
                case "--context" when i + 1 < args.Length: contexts.Add(int.Parse(args[++i])); break;
                case "--batch" when i + 1 < args.Length: batches.Add(int.Parse(args[++i])); break;
                case "--decode-tokens" when i + 1 < args.Length: decodeTokens = int.Parse(args[++i]); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--max-prefill-tokens" when i + 1 < args.Length: maxPrefill = long.Parse(args[++i]); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                case "--device" when i + 1 < args.Length: device = args[++i]; break;
                case "--path" when i + 1 < args.Length && Enum.TryParse<Platform.Engine.Model.ForwardPath>(args[i + 1], ignoreCase: true, out var path): paths.Add(path); i++; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine("usage: engine [--preset small|medium]... [--context N]... [--batch N]... [--decode-tokens N] [--threads N] [--max-prefill-tokens N] [--json FILE] [--device cpu|cuda[:N]] [--path generic|native]...");
                    return 2;
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

        var cells = new List<Cell>();
        foreach (var preset in presets)
        {
            string dir = BenchModels.Ensure(preset);
            int maxContext = contexts.Max() + decodeTokens + 64;
            long kvTokens = (long)maxContext * batches.Max() + maxContext * 2;
            var options = new EngineOptions
            {
                Threads = threads,
                MaxBatchTokens = 2048,
                MaxRunningRequests = Math.Max(64, batches.Max()),
                NumKvBlocks = (int)(kvTokens / 16 + 64),
                DefaultSeed = 1,
                Device = device,
            };
            AnsiConsole.MarkupLine($"[grey]loading {preset}…[/]");
            using var engine = LlmEngine.Load(dir, options);
            var c = engine.Config;
            long weightBytes = WeightBytesPerStep(c);
            long kvBytesPerToken = 2L * c.NumLayers * c.NumKvHeads * c.HeadDim * 4;
            int seed = 0;
            foreach (int context in contexts)
            {
                foreach (int batch in batches)
                foreach (var path in paths)
                {
                    engine.ForwardPath = path;
                    double? prefill = null;
                    if ((long)batch * context <= maxPrefill)
                        prefill = await MeasurePrefill(engine, batch, context, ++seed);
                    double decode = await MeasureDecode(engine, batch, context, decodeTokens, ++seed);
                    long stepBytes = weightBytes + batch * (long)context * kvBytesPerToken;
                    double bound = batch / (stepBytes / (bandwidth * 1e9));
                    var cell = new Cell(preset, path.ToString().ToLowerInvariant(), context, batch, prefill, decode, bound, decode / bound, stepBytes);
                    cells.Add(cell);
                    AnsiConsole.MarkupLine($"{preset} {cell.Path} ctx {context,5} batch {batch,2}: prefill {(prefill is { } p ? $"{p,8:F1}" : "    skip")} tok/s, decode {decode,8:F1} tok/s = {decode / bound:P0} of bound {bound:F1}");
                }
            }
        }

        var table = new Table().AddColumns("preset", "path", "context", "batch", "prefill tok/s", "decode tok/s", "bound tok/s", "of bound", "decode vs batch 1");
        foreach (var cell in cells)
        {
            var b1 = cells.FirstOrDefault(x => x.Preset == cell.Preset && x.Path == cell.Path && x.Context == cell.Context && x.Batch == 1);
            table.AddRow(cell.Preset, cell.Path, cell.Context.ToString(), cell.Batch.ToString(),
                cell.PrefillTokensPerSecond is { } p ? p.ToString("F1") : "skipped",
                cell.DecodeTokensPerSecond.ToString("F1"), cell.DecodeBoundTokensPerSecond.ToString("F1"),
                cell.DecodeFractionOfBound.ToString("P0"), b1 is null ? "" : (cell.DecodeTokensPerSecond / b1.DecodeTokensPerSecond).ToString("F1") + "×");
        }
        AnsiConsole.Write(table);

        jsonPath ??= Path.Combine("bench", "results", $"engine-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            machine = new { cores = Environment.ProcessorCount, threads, streaming_read_gbps = bandwidth },
            cells,
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return 0;
    }

    /// <summary>The random-weight preset's model directory under the platform cache, created on first use.</summary>
    /// <summary>Weights streamed per decode step: every projection and the output head (the embedding is a row lookup).</summary>
    private static long WeightBytesPerStep(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        long perLayer = h * (q + 2 * kv) + q * h + 3 * h * c.IntermediateSize;
        return 4 * (c.NumLayers * perLayer + (long)c.VocabSize * h);
    }

    private static List<int> RandomTokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(0, Math.Min(vocab, 256))).ToList();
    }

    private static async Task<double> MeasurePrefill(LlmEngine engine, int batch, int context, int seed)
    {
        var sampling = new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true };
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, batch).Select(async b =>
        {
            await foreach (var _ in engine.GenerateAsync(new GenerationRequest(RandomTokens(context, engine.Config.VocabSize, seed * 1000 + b), sampling)))
            {
            }
        }));
        return (double)batch * context / sw.Elapsed.TotalSeconds;
    }

    private static async Task<double> MeasureDecode(LlmEngine engine, int batch, int context, int decodeTokens, int seed)
    {
        var shared = RandomTokens(context - 16, engine.Config.VocabSize, seed);
        var warm = new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true };
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
            var prompt = shared.Concat(RandomTokens(16, engine.Config.VocabSize, seed * 7919 + b)).ToList();
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
