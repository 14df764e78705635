// `steptarget` mode: what the step time bound (EngineOptions.TargetStepMs)
// costs and buys on the small preset, to choose its default.
//
// A 31,744-token prefix is prefilled once; it stays in the prefix cache, so
// every later prompt that starts with its first C tokens computes only its own
// new tokens, at context C. That makes 4K, 16K and 32K points cheap to repeat.
// For each round (interleaved), context C and target T (0 = tokens only):
//  * prefill: a prompt of prefix[..C] plus 512 new tokens; tokens/s = 512 / time
//    to its first token; step times are the gaps between its progress chunks.
// Then, at 32K, for each target: a short request is decoding; a prompt of the
// whole prefix plus 1,000 new tokens prefills at 31.7K–32.7K of context; one
// second into that prefill a 16-token request arrives. Reported: its time to
// first token, the running decode's largest and mean inter-token gap during
// the prefill, and the long prompt's own prefill time.
// Best of --rounds rounds (highest throughput, smallest TTFT and gaps).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Engine;
using Platform.Engine.Scheduling;
using Spectre.Console;

namespace Platform.Bench;

internal static class StepTargetBench
{
    private const int PrefixTokens = 31_744;
    private const int NewTokens = 512;
    private const int LongNewTokens = 1_000;

    private sealed record PrefillCell(int Context, int TargetMs, double TokensPerSecond, double MeanStepMs, double MaxStepMs, int Steps);
    private sealed record FairCell(int TargetMs, double ShortTtftSeconds, double MaxDecodeGapSeconds, double MeanDecodeGapSeconds, double LongPrefillSeconds);

    public static async Task<int> Run(string[] args)
    {
        var targets = new List<int>();
        var contexts = new List<int>();
        int rounds = 3, threads = Environment.ProcessorCount;
        string? jsonPath = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--target-ms" when i + 1 < args.Length: targets.Add(int.Parse(args[++i], CultureInfo.InvariantCulture)); break;
                case "--context" when i + 1 < args.Length: contexts.Add(int.Parse(args[++i], CultureInfo.InvariantCulture)); break;
                case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine("usage: steptarget [--target-ms N]... [--context N]... [--rounds N] [--threads N] [--json FILE]");
                    return 2;
            }
        }
        if (targets.Count == 0) targets.AddRange([0, 250, 500, 1000]);
        if (contexts.Count == 0) contexts.AddRange([4096, 16384, PrefixTokens]);
        if (contexts.Any(c => c > PrefixTokens || c % 16 != 0))
        {
            Console.Error.WriteLine($"contexts must be multiples of 16 up to {PrefixTokens}");
            return 2;
        }

        string dir = BenchModels.Ensure("small");
        var options = new EngineOptions { Threads = threads, NumKvBlocks = 65_536 / 16, DefaultSeed = 1, TargetStepMs = 500 };
        using var engine = LlmEngine.Load(dir, options);
        engine.ProgressInterval = TimeSpan.Zero;
        int vocab = engine.Config.VocabSize;
        var prefix = Tokens(PrefixTokens, vocab, 1);

        AnsiConsole.MarkupLine($"[grey]prefilling the {PrefixTokens}-token prefix once (target 500 ms)…[/]");
        var prefixRun = await Prefill(engine, prefix);
        AnsiConsole.MarkupLine($"prefix: {prefixRun.Seconds:F1} s, {PrefixTokens / prefixRun.Seconds:F0} tokens/s, {prefixRun.Steps} steps, largest step {prefixRun.MaxStepMs:F0} ms");

        var prefill = new List<PrefillCell>();
        var fair = new List<FairCell>();
        int seed = 100;
        for (int round = 0; round < rounds; round++)
        {
            foreach (int context in contexts)
            {
                foreach (int target in targets)
                {
                    SetTarget(engine, target);
                    var prompt = prefix.Take(context).Concat(Tokens(NewTokens, vocab, ++seed)).ToList();
                    var run = await Prefill(engine, prompt);
                    var cell = new PrefillCell(context, target, NewTokens / run.Seconds, run.Seconds * 1000 / run.Steps, run.MaxStepMs, run.Steps);
                    prefill.Add(cell);
                    AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "round {0} ctx {1,6} target {2,5} ms: {3,7:F1} tok/s, {4} steps, mean step {5,6:F0} ms, largest {6,6:F0} ms",
                        round + 1, context, target, cell.TokensPerSecond, cell.Steps, cell.MeanStepMs, cell.MaxStepMs);
                }
            }
            foreach (int target in targets)
            {
                SetTarget(engine, target);
                var cell = await Fairness(engine, prefix, target, ++seed);
                fair.Add(cell);
                AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "round {0} 32K prefill, target {1,5} ms: short TTFT {2:F2} s, decode gap max {3:F2} s mean {4:F2} s, long prefill {5:F1} s",
                    round + 1, target, cell.ShortTtftSeconds, cell.MaxDecodeGapSeconds, cell.MeanDecodeGapSeconds, cell.LongPrefillSeconds);
            }
        }

        var table = new Table().AddColumns("context", "target ms", "prefill tok/s (best)", "vs tokens only", "mean step ms", "largest step ms");
        foreach (var group in prefill.GroupBy(c => (c.Context, c.TargetMs)))
        {
            var best = group.MaxBy(c => c.TokensPerSecond)!;
            double baseline = prefill.Where(c => c.Context == best.Context && c.TargetMs == 0).Select(c => c.TokensPerSecond).DefaultIfEmpty(double.NaN).Max();
            table.AddRow(best.Context.ToString(CultureInfo.InvariantCulture), best.TargetMs.ToString(CultureInfo.InvariantCulture), best.TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture),
                (best.TokensPerSecond / baseline).ToString("P0", CultureInfo.InvariantCulture), best.MeanStepMs.ToString("F0", CultureInfo.InvariantCulture),
                best.MaxStepMs.ToString("F0", CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(table);
        var fairTable = new Table().AddColumns("target ms", "short TTFT s (best)", "decode gap max s", "decode gap mean s", "long prefill s");
        foreach (var group in fair.GroupBy(c => c.TargetMs))
        {
            fairTable.AddRow(group.Key.ToString(CultureInfo.InvariantCulture), group.Min(c => c.ShortTtftSeconds).ToString("F2", CultureInfo.InvariantCulture),
                group.Min(c => c.MaxDecodeGapSeconds).ToString("F2", CultureInfo.InvariantCulture), group.Min(c => c.MeanDecodeGapSeconds).ToString("F2", CultureInfo.InvariantCulture),
                group.Min(c => c.LongPrefillSeconds).ToString("F1", CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(fairTable);

        jsonPath ??= Path.Combine("bench", "results", $"steptarget-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            machine = new { cores = Environment.ProcessorCount, threads },
            prefix = new { tokens = PrefixTokens, seconds = prefixRun.Seconds, steps = prefixRun.Steps, max_step_ms = prefixRun.MaxStepMs },
            prefill,
            fairness = fair,
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return 0;
    }

    private static void SetTarget(LlmEngine engine, int targetMs) => engine.StepCost.TargetStepTime = TimeSpan.FromMilliseconds(targetMs);

    private static List<int> Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(3, vocab)).ToList();
    }

    /// <summary>Prefills a prompt (one output token); step times are the gaps between its progress chunks.</summary>
    private static async Task<(double Seconds, int Steps, double MaxStepMs)> Prefill(LlmEngine engine, List<int> prompt)
    {
        long steps = engine.GetStats().Steps;
        var sw = Stopwatch.StartNew();
        double previous = 0, maxStep = 0;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true })))
        {
            double now = sw.Elapsed.TotalMilliseconds;
            maxStep = Math.Max(maxStep, now - previous);
            previous = now;
        }
        return (sw.Elapsed.TotalSeconds, (int)(engine.GetStats().Steps - steps), maxStep);
    }

    private static async Task<FairCell> Fairness(LlmEngine engine, List<int> prefix, int target, int seed)
    {
        int vocab = engine.Config.VocabSize;
        var decodeSampling = new SamplingParams { MaxTokens = 2_000, Temperature = 0, IgnoreEos = true };  // within the context; cancelled at the end
        var oneToken = new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true };
        using var stopDecoder = new CancellationTokenSource();
        var decoding = new TaskCompletionSource();
        var tokenTimes = new List<double>();
        var clock = Stopwatch.StartNew();
        var decoder = Task.Run(async () =>
        {
            try
            {
                await foreach (var c in engine.GenerateAsync(new GenerationRequest(Tokens(16, vocab, seed * 31), decodeSampling), stopDecoder.Token))
                {
                    if (c.TokenIds.Count == 0) continue;
                    lock (tokenTimes) tokenTimes.Add(clock.Elapsed.TotalSeconds);
                    decoding.TrySetResult();
                }
            }
            catch (OperationCanceledException) when (stopDecoder.IsCancellationRequested)
            {
            }
        });
        await Task.WhenAny(decoding.Task, decoder);
        if (decoder.IsFaulted) await decoder;

        var prefilling = new TaskCompletionSource();
        double longStart = 0, longFirstToken = 0;
        var longPrompt = prefix.Concat(Tokens(LongNewTokens, vocab, seed)).ToList();
        var longRun = Task.Run(async () =>
        {
            longStart = clock.Elapsed.TotalSeconds;
            await foreach (var c in engine.GenerateAsync(new GenerationRequest(longPrompt, oneToken)))
            {
                if (c.Progress is not null) prefilling.TrySetResult();
                else if (c.TokenIds.Count > 0) longFirstToken = clock.Elapsed.TotalSeconds;
            }
        });
        await prefilling.Task;
        await Task.Delay(1000);
        double shortStart = clock.Elapsed.TotalSeconds, shortTtft = double.NaN;
        await foreach (var c in engine.GenerateAsync(new GenerationRequest(Tokens(16, vocab, seed * 17), oneToken)))
            if (c.TokenIds.Count > 0 && double.IsNaN(shortTtft)) shortTtft = clock.Elapsed.TotalSeconds - shortStart;
        await longRun;
        await stopDecoder.CancelAsync();
        await decoder;

        List<double> during;
        lock (tokenTimes) during = tokenTimes.Where(t => t >= longStart && t <= longFirstToken).ToList();
        var gaps = during.Zip(during.Skip(1), (a, b) => b - a).ToList();
        return new FairCell(target, shortTtft, gaps.Count == 0 ? double.NaN : gaps.Max(), gaps.Count == 0 ? double.NaN : gaps.Average(), longFirstToken - longStart);
    }
}
