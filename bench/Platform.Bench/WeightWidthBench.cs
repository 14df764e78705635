// `weights` mode: decode tokens/s of one bf16 (or f16) checkpoint served three ways in one run —
// weights held narrow (WeightDtype auto: 2 bytes per weight, widened in registers by the GEMV),
// widened to float32 at load (4 bytes, the old behaviour) and quantized to int8 (--quantization
// int8: ~1.06 bytes per weight in the decoder layers) — with the ratios to float32 and int8/narrow.
// Decode is bound by the bytes of weights each token reads, so the ratios say how much of the
// smaller weight stream the kernels turn into speed. --no-int8 leaves the int8 engine out.
//
// The engines are loaded side by side; rounds alternate between them (narrow, float32, int8,
// narrow, ...) so a change of machine load hits all alike, and each keeps its best round. A round:
// a 16-token prompt, then B greedy requests of --tokens each; tokens/s counts tokens after every
// request's first one, over that interval. The greedy ids of narrow and float32 are compared too
// (they compute on identical weight values, so they should agree; a difference is printed); int8
// computes on other values, so for it the count of leading ids equal to float32's is printed.
// The load average at start and end is printed: on a shared machine, read the ratio, not the rates.
using System.Diagnostics;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Core.Safetensors;
using Platform.Engine;
using Platform.Engine.Kernels;
using Platform.Engine.Scheduling;
using Spectre.Console;

namespace Platform.Bench;

internal static class WeightWidthBench
{
    private sealed record Cell(string Preset, string Checkpoint, int Batch, double NarrowTokensPerSecond, double Float32TokensPerSecond, double Ratio, bool GreedyIdsEqual,
        double? Int8TokensPerSecond, double? Int8OverFloat32, double? Int8OverNarrow, int? Int8LeadingIdsEqual);

    public static async Task<int> Run(string[] args)
    {
        string preset = "medium";
        var checkpoint = SafetensorsDtype.BF16;
        var batches = new List<int>();
        int tokens = 32, rounds = 3, threads = Environment.ProcessorCount;
        string? jsonPath = null;
        bool withInt8 = true;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: preset = args[++i]; break;
                case "--checkpoint" when i + 1 < args.Length:
                    checkpoint = args[++i].ToLowerInvariant() switch
                    {
                        "bf16" or "bfloat16" => SafetensorsDtype.BF16,
                        "f16" or "float16" => SafetensorsDtype.F16,
                        var other => throw new ArgumentException($"--checkpoint must be bf16 or f16, got '{other}'"),
                    };
                    break;
                case "--batch" when i + 1 < args.Length: batches.Add(int.Parse(args[++i])); break;
                case "--tokens" when i + 1 < args.Length: tokens = int.Parse(args[++i]); break;
                case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i]); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                case "--no-int8": withInt8 = false; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine("usage: weights [--preset medium] [--checkpoint bf16|f16] [--batch N]... [--tokens N] [--rounds N] [--threads N] [--no-int8] [--json FILE]");
                    return 2;
            }
        }
        if (batches.Count == 0) batches.Add(1);
        KernelThreads.Count = threads;
        string loadBefore = LoadAverage();
        AnsiConsole.MarkupLine($"kernel path: [bold]{Gemv.ActivePath}[/], threads {threads}, load average {loadBefore}");

        string dir = BenchModels.Ensure(preset, checkpoint);
        EngineOptions Options(string weightDtype, string quantization = "none") => new()
        {
            Threads = threads,
            MaxRunningRequests = Math.Max(8, batches.Max()),
            NumKvBlocks = batches.Max() * ((16 + tokens) / 16 + 2) + 8,
            DefaultSeed = 1,
            WeightDtype = weightDtype,
            Quantization = quantization,
        };
        AnsiConsole.MarkupLine($"[grey]loading {preset} ({checkpoint}) narrow, widened to float32{(withInt8 ? " and int8" : "")}…[/]");
        using var narrow = LlmEngine.Load(dir, Options("auto"));
        using var wide = LlmEngine.Load(dir, Options("float32"));
        using var int8 = withInt8 ? LlmEngine.Load(dir, Options("auto", "int8")) : null;

        var cells = new List<Cell>();
        foreach (int batch in batches)
        {
            double bestNarrow = 0, bestWide = 0, bestInt8 = 0;
            bool same = true;
            int int8Leading = int.MaxValue;
            for (int round = 0; round < rounds; round++)
            {
                var (narrowRate, narrowIds) = await Decode(narrow, batch, tokens);
                var (wideRate, wideIds) = await Decode(wide, batch, tokens);
                same &= narrowIds.SequenceEqual(wideIds);
                bestNarrow = Math.Max(bestNarrow, narrowRate);
                bestWide = Math.Max(bestWide, wideRate);
                string int8Text = "";
                if (int8 is not null)
                {
                    var (int8Rate, int8Ids) = await Decode(int8, batch, tokens);
                    bestInt8 = Math.Max(bestInt8, int8Rate);
                    int8Leading = Math.Min(int8Leading, wideIds.Zip(int8Ids).TakeWhile(p => p.First == p.Second).Count());
                    int8Text = $", int8 {int8Rate:F2} tok/s";
                }
                AnsiConsole.MarkupLine($"batch {batch} round {round + 1}: narrow {narrowRate:F2} tok/s, float32 {wideRate:F2} tok/s{int8Text}");
            }
            cells.Add(new Cell(preset, checkpoint.ToString(), batch, bestNarrow, bestWide, bestNarrow / bestWide, same,
                int8 is null ? null : bestInt8, int8 is null ? null : bestInt8 / bestWide, int8 is null ? null : bestInt8 / bestNarrow, int8 is null ? null : int8Leading));
        }
        string loadAfter = LoadAverage();

        var table = new Table().AddColumns("preset", "checkpoint", "batch", "narrow tok/s", "float32 tok/s", "narrow / float32", "greedy ids equal",
            "int8 tok/s", "int8 / float32", "int8 / narrow", "int8 leading ids = float32");
        foreach (var cell in cells)
            table.AddRow(cell.Preset, cell.Checkpoint, cell.Batch.ToString(), cell.NarrowTokensPerSecond.ToString("F2"),
                cell.Float32TokensPerSecond.ToString("F2"), cell.Ratio.ToString("F2") + "×", cell.GreedyIdsEqual ? "yes" : "NO",
                cell.Int8TokensPerSecond?.ToString("F2") ?? "-", cell.Int8OverFloat32 is { } f ? f.ToString("F2") + "×" : "-",
                cell.Int8OverNarrow is { } n ? n.ToString("F2") + "×" : "-", cell.Int8LeadingIdsEqual is { } l ? $"{l} of {tokens}" : "-");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"best of {rounds} interleaved rounds; load average before {loadBefore}, after {loadAfter}");

        jsonPath ??= Path.Combine("bench", "results", $"weights-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            machine = new { cores = Environment.ProcessorCount, threads, kernel_path = Gemv.ActivePath.ToString(), load_before = loadBefore, load_after = loadAfter },
            rounds,
            tokens,
            cells,
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return 0;
    }

    /// <summary>One round: B greedy requests after a shared 16-token prompt; tokens/s after every first token, and request 0's ids.</summary>
    private static async Task<(double TokensPerSecond, List<int> Ids)> Decode(LlmEngine engine, int batch, int tokens)
    {
        var sampling = new SamplingParams { MaxTokens = tokens, Temperature = 0, IgnoreEos = true };
        var started = new TaskCompletionSource();
        int firsts = 0;
        long counted = 0;
        double startedAt = 0;
        var ids = new List<int>();
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, batch).Select(async b =>
        {
            var prompt = Enumerable.Range(0, 16).Select(i => (i * 31 + b * 7 + 3) % Math.Min(256, engine.Config.VocabSize)).ToList();
            bool first = true;
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling)))
            {
                if (chunk.TokenIds.Count == 0) continue;
                if (b == 0) ids.AddRange(chunk.TokenIds);
                if (first)
                {
                    first = false;
                    if (Interlocked.Increment(ref firsts) == batch)
                    {
                        startedAt = clock.Elapsed.TotalSeconds;
                        started.SetResult();
                    }
                    continue;
                }
                if (started.Task.IsCompleted) Interlocked.Add(ref counted, chunk.TokenIds.Count);
            }
        }));
        return (counted / (clock.Elapsed.TotalSeconds - startedAt), ids);
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
}
