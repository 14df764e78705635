// `dist` mode: what DistAttention buys and costs, over real workers (in-process
// hosts, gRPC on loopback) of the small preset.
//
//  * Capacity: N workers (1, 2, 4) of M KV tokens each. The largest prompt the
//    first worker can serve (with max_tokens 1) is found from what its peers
//    report they can lend, then checked for real: that prompt is served to the
//    end, and one block more is refused. Goal: max(N) ≥ 0.9 × N × max(1).
//  * Decode: a prompt that needs two workers (1.5 × M tokens) decodes
//    --decode-tokens tokens on 2 workers of M, and the same prompt on one worker
//    with room for all of it, in the same run; time per token after the first.
//    Goal: slowdown ≤ 1.3×.
// Figures go to a table and to JSON (bench/results/dist-*.json).
using System.Diagnostics;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Engine;
using Platform.Engine.Scheduling;
using Microsoft.Extensions.DependencyInjection;
using Platform.Testing;
using Platform.Worker;
using Spectre.Console;
using Platform.Core.Networking;
using Platform.Core.Workers;

namespace Platform.Bench;

internal static class DistBench
{
    public static async Task<int> Run(string[] args)
    {
        string preset = "small";
        int kvTokens = 2048, decodeTokens = 32;
        var counts = new List<int>();
        string? jsonPath = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: preset = args[++i]; break;
                case "--worker-kv-tokens" when i + 1 < args.Length: kvTokens = int.Parse(args[++i]); break;
                case "--workers" when i + 1 < args.Length: counts.Add(int.Parse(args[++i])); break;
                case "--decode-tokens" when i + 1 < args.Length: decodeTokens = int.Parse(args[++i]); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                default:
                    Console.Error.WriteLine($"unknown or incomplete argument '{args[i]}'");
                    Console.Error.WriteLine("usage: dist [--preset small] [--worker-kv-tokens M] [--workers N]... [--decode-tokens N] [--json FILE]");
                    return 2;
            }
        }
        if (counts.Count == 0) counts = [1, 2, 4];
        string model = BenchModels.Ensure(preset);
        int threads = Math.Max(1, Environment.ProcessorCount / 2);

        var capacity = new List<object>();
        int? single = null;
        foreach (int n in counts)
        {
            AnsiConsole.MarkupLine($"[grey]capacity: {n} worker(s) of {kvTokens} KV tokens…[/]");
            var workers = await StartAsync(model, n, kvTokens, threads);
            try
            {
                var debtor = workers[0].Engine;
                int block = debtor.Options.BlockSize;
                int max = n == 1 ? kvTokens / block * block - 1 : await LargestPromptAsync(workers, kvTokens);
                var watch = Stopwatch.StartNew();
                var served = await GenerateAsync(debtor, Prompt(max, 1), 1);
                double seconds = watch.Elapsed.TotalSeconds;
                bool refused;
                try
                {
                    await GenerateAsync(debtor, Prompt(max + block, 2), 1);
                    refused = false;
                }
                catch (EngineRequestException)
                {
                    refused = true;
                }
                single ??= n == 1 ? max : null;
                double? ratio = single is { } s ? (double)max / (n * s) : null;
                AnsiConsole.MarkupLine($"{n} worker(s): largest prompt [bold]{max}[/] tokens (served in {seconds:F1} s: {served.Finish}; one block more refused: {refused})"
                    + (ratio is { } r ? $" = {r:F3} × N × single" : ""));
                capacity.Add(new { workers = n, worker_kv_tokens = kvTokens, largest_prompt = max, served = served.Finish == FinishReason.Length, prefill_seconds = seconds,
                    one_block_more_refused = refused, ratio_to_n_times_single = ratio });
            }
            finally
            {
                foreach (var w in workers) await w.DisposeAsync();
            }
        }

        int context = kvTokens * 3 / 2;
        AnsiConsole.MarkupLine($"[grey]decode: {context}-token context on 2 workers of {kvTokens} vs 1 worker of {context * 2}…[/]");
        double split, whole;
        {
            var pair = await StartAsync(model, 2, kvTokens, threads);
            try
            {
                split = await DecodeSecondsPerTokenAsync(pair[0].Engine, context, decodeTokens);
                var waited = pair[0].Engine.GetDistAttentionStats().RemoteAttentionTime;
                var lender = pair[1].Services.GetRequiredService<EngineHost>().Lender!;
                AnsiConsole.MarkupLine($"[grey]waiting for the peer (prefill and decode): {waited.TotalMilliseconds:F0} ms; the peer serving {lender.AttendCalls} layer calls: {lender.AttendTime.TotalMilliseconds:F0} ms[/]");
            }
            finally { foreach (var w in pair) await w.DisposeAsync(); }
            var big = await StartAsync(model, 1, context * 2, threads);
            try { whole = await DecodeSecondsPerTokenAsync(big[0].Engine, context, decodeTokens); }
            finally { foreach (var w in big) await w.DisposeAsync(); }
        }
        var table = new Table().AddColumns("decode", "ms/token");
        table.AddRow($"one worker with room for {context}", $"{whole * 1000:F2}");
        table.AddRow($"two workers of {kvTokens} (DistAttention)", $"{split * 1000:F2}");
        table.AddRow("slowdown (goal ≤ 1.3×)", $"{split / whole:F2}×");
        AnsiConsole.Write(table);

        jsonPath ??= Path.Combine("bench", "results", $"dist-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            preset, machine = new { cores = Environment.ProcessorCount },
            capacity,
            decode = new { context, worker_kv_tokens = kvTokens, tokens = decodeTokens, single_worker_ms = whole * 1000, two_workers_ms = split * 1000, slowdown = split / whole },
        }, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return 0;
    }

    /// <summary>N in-process workers with free ports; with two or more, DistAttention on and every other worker a peer.</summary>
    private static async Task<List<InProcessWorker>> StartAsync(string model, int n, int kvTokens, int threads)
    {
        var ports = Enumerable.Range(0, n).Select(_ => LoopbackPort.Free()).ToArray();
        var workers = new List<InProcessWorker>();
        for (int i = 0; i < n; i++)
        {
            var args = new WorkerArguments
            {
                Port = ports[i], KvTokens = kvTokens, Threads = threads, Seed = 1, DistAttention = n > 1,
                Peers = n > 1 ? [.. ports.Where((_, j) => j != i).Select(p => $"http://127.0.0.1:{p}")] : null,
            };
            workers.Add(await InProcessWorker.StartAsync(model, args.ToArgs()));
        }
        return workers;
    }

    /// <summary>The first worker's local share plus what every peer says it can lend, in whole blocks, minus the one generated token.</summary>
    private static async Task<int> LargestPromptAsync(List<InProcessWorker> workers, int kvTokens)
    {
        var debtor = workers[0].Engine;
        int block = debtor.Options.BlockSize;
        int local = (int)(debtor.TotalKvBlocks * debtor.Options.DistLocalFraction) * block;
        int lendable = 0;
        foreach (var w in workers.Skip(1))
        {
            using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(w.GrpcAddress);
            var reply = await new Core.Protos.KvPeer.KvPeerClient(channel).ReserveAsync(new Core.Protos.ReserveRequest { Tokens = 0, LeaseMs = 1000, Fingerprint = w.Engine.Fingerprint.Id });
            lendable += reply.LendableTokens / block * block;
        }
        return Math.Min(local + lendable, debtor.MaxContextTokens) - 1;
    }

    private static async Task<double> DecodeSecondsPerTokenAsync(LlmEngine engine, int context, int tokens)
    {
        long first = 0, last = 0;
        int seen = 0;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt(context, 3), new SamplingParams { MaxTokens = tokens, Temperature = 0, IgnoreEos = true })))
        {
            if (chunk.TokenIds.Count == 0) continue;
            if (seen == 0) first = Stopwatch.GetTimestamp();
            seen += chunk.TokenIds.Count;
            last = Stopwatch.GetTimestamp();
        }
        return Stopwatch.GetElapsedTime(first, last).TotalSeconds / Math.Max(1, seen - 1);
    }

    private static async Task<GenerationChunk> GenerateAsync(LlmEngine engine, int[] prompt, int maxTokens)
    {
        GenerationChunk? last = null;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true })))
            last = chunk;
        return last!;
    }

    private static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(3, 4000)).ToArray();
    }
}
