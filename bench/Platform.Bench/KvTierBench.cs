// `kvtier` mode: time to first token (TTFT) for a prompt with a long shared
// prefix, by where the prefix's KV comes from, in one run:
//   cold         a fresh engine computes everything (its blocks are written through to host and Redis)
//   device       the same engine, same prefix, a different last block: device prefix-cache hit
//   host         the same engine after its device prefix cache is cleared: blocks copied from host memory
//   remote-redis a fresh engine (empty device and host) against redis-server on loopback
//   remote-garnet the same against an embedded Garnet server (its blocks written by a first engine)
// Each prompt = the shared prefix + 16 distinct tokens, max_tokens 1, greedy; TTFT is from submit to the
// first token. Every engine is warmed up on an unrelated short prompt first (JIT, thread pools). The goal
// in the issue: remote hit ≤ 1/4 of cold. Figures are printed and written as JSON (bench/results/kvtier-*.json).
using System.Diagnostics;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Engine;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using Platform.KvCache.Garnet;
using Platform.Testing;
using Spectre.Console;

namespace Platform.Bench;

internal static class KvTierBench
{
    private sealed record Row(string Case, double TtftMs, double RatioToCold, int CachedDevice, int CachedHost, int CachedRemote);

    public static async Task<int> Run(string[] args)
    {
        string preset = "small";
        int prefix = 8192;
        int threads = Environment.ProcessorCount;
        string? jsonPath = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--preset" when i + 1 < args.Length: preset = args[++i]; break;
                case "--prefix" when i + 1 < args.Length: prefix = int.Parse(args[++i]); break;
                case "--threads" when i + 1 < args.Length: threads = int.Parse(args[++i]); break;
                case "--json" when i + 1 < args.Length: jsonPath = args[++i]; break;
                default:
                    Console.Error.WriteLine("usage: kvtier [--preset small] [--prefix N] [--threads N] [--json FILE]");
                    return 2;
            }
        }
        string dir = BenchModels.Ensure(preset);
        var rng = new Random(1);
        int[] shared = [.. Enumerable.Range(0, prefix).Select(_ => rng.Next(10, 4000))];
        int suffixSeed = 100;
        List<int> Prompt() { var r = new Random(suffixSeed++); return [.. shared, .. Enumerable.Range(0, 16).Select(_ => r.Next(10, 4000))]; }
        var options = new EngineOptions { NumKvBlocks = prefix / 16 + 64, MaxBatchTokens = 512, Threads = threads, DefaultSeed = 1, MaxContextTokens = prefix + 64 };
        long hostBytes = (long)(prefix / 16 + 64) * 70_000;
        var rows = new List<Row>();
        double cold = 0;
        void Add(string name, (double Ms, CachedTokenSplit Split) r)
        {
            if (name == "cold") cold = r.Ms;
            rows.Add(new Row(name, r.Ms, r.Ms / cold, r.Split.Device, r.Split.Host, r.Split.Remote));
            AnsiConsole.MarkupLine($"{name,-14} TTFT {r.Ms,9:F1} ms  ({r.Ms / cold:P1} of cold)  cached device {r.Split.Device} host {r.Split.Host} remote {r.Split.Remote}");
        }

        await using var redis = await RedisServerProcess.StartAsync("--maxmemory", "2gb");
        using var garnet = EmbeddedGarnet.Start(memory: "2g");
        KvTierOptions Tier(string address) => new()
        {
            Mode = "remote",
            HostMemory = hostBytes.ToString(),
            Remote = new RemoteTierOptions { Address = address, KeyPrefix = $"bench{Environment.ProcessId}:" }, // default budgets, as a worker runs
        };

        AnsiConsole.MarkupLine($"[grey]{preset} preset, shared prefix {prefix} tokens + 16 distinct, {threads} threads[/]");
        using (var a = await Start(dir, options, Tier(redis.Address)))
        {
            Add("cold", await Ttft(a, Prompt()));
            Add("device", await Ttft(a, Prompt()));
            await a.KvTiers!.FlushAsync();
            await a.ClearDeviceCacheAsync();
            Add("host", await Ttft(a, Prompt()));
            await a.KvTiers!.FlushAsync();
        }
        using (var c = await Start(dir, options, Tier(redis.Address)))
            Add("remote-redis", await Ttft(c, Prompt()));
        using (var writer = await Start(dir, options, Tier(garnet.Address)))
        {
            await Ttft(writer, Prompt());
            await writer.KvTiers!.FlushAsync();
        }
        using (var e = await Start(dir, options, Tier(garnet.Address)))
            Add("remote-garnet", await Ttft(e, Prompt()));

        jsonPath ??= Path.Combine("bench", "results", $"kvtier-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new { preset, prefix, threads, rows }, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}[/]");
        return 0;
    }

    private static async Task<LlmEngine> Start(string dir, EngineOptions options, KvTierOptions tier)
    {
        var engine = LlmEngine.Load(dir, options);
        await engine.EnableKvTierAsync(tier);
        var warm = new Random(999);
        await Ttft(engine, [.. Enumerable.Range(0, 40).Select(_ => warm.Next(10, 4000))]);
        return engine;
    }

    private static async Task<(double Ms, CachedTokenSplit Split)> Ttft(LlmEngine engine, List<int> prompt)
    {
        var sw = Stopwatch.StartNew();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true })))
            if (chunk.TokenIds.Count > 0) return (sw.Elapsed.TotalMilliseconds, chunk.CachedByTier);
        throw new InvalidOperationException("no token");
    }
}
