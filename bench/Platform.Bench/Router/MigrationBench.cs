// `migration` mode: what a client sees when the worker streaming its answer is
// SIGKILLed — the gap in the stream at the kill — with the KV tier off and on.
// Two clusters side by side, each two platform-worker processes (small preset,
// one engine thread each, fixed loopback ports so a restarted worker rejoins)
// and a platform-router with its shipped migration default:
//   * "tier off":    the next worker recomputes the prompt and the tokens sent;
//   * "tier remote": workers write KV blocks through to a redis-server, so the
//                    next worker fetches what the dead one computed.
// Rounds are interleaved (off, remote, off, remote, …). Each round streams one
// never-seen prompt (random token ids, greedy), SIGKILLs the serving worker at a
// random token, reads the stream to its end, then restarts the killed worker and
// waits for the router to have it back. Per kill: the gap (the longest silence in
// the stream after the kill: tokens already on their way still arrive first), the request's total time (send → [DONE]), and
// the gap's share of it. Reported per mode: p50 and p99 of the gap (with few
// kills p99 is the largest) and the median share. Results go to a JSON file.
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Core.Networking;
using Platform.Core.Processes;
using Platform.Core.Workers;
using Platform.Testing;
using Spectre.Console;

namespace Platform.Bench.Router;

internal static class MigrationBench
{
    private const string Usage = "usage: migration [--quick] [--rounds N] [--prompt TOKENS] [--max-tokens N] [--json FILE]";

    internal sealed record KillResult(string Mode, int Round, int PromptTokens, int KilledAtToken, double GapSeconds, double TotalSeconds, bool Ok, string? Error)
    {
        public double GapShare => GapSeconds / TotalSeconds;
    }

    /// <summary>One cluster: workers on fixed ports (restartable in place) and a router over them.</summary>
    private sealed class Cluster(string name, string modelDir, WorkerArguments extra) : IAsyncDisposable
    {
        private readonly int[] _ports = [LoopbackPort.Free(), LoopbackPort.Free()];
        private readonly WorkerProcess?[] _workers = new WorkerProcess?[2];
        private ChildProcess? _router;

        public string Name { get; } = name;
        public Uri? RouterUrl { get; private set; }

        private List<string> WorkerArgs(int i) => (extra with
        {
            Model = modelDir, Port = _ports[i], HttpPort = 0, WorkerId = $"{Name}-{i}", Threads = 1, Seed = 1, LogLevel = "Warning", ServedModelName = "small",
        }).ToArgs();

        public async Task StartAsync(CancellationToken cancellationToken)
        {
            for (int i = 0; i < _workers.Length; i++)
                _workers[i] = await WorkerProcess.StartAsync(WorkerArgs(i), readyTimeout: TimeSpan.FromMinutes(5), cancellationToken: cancellationToken);
            _router = ChildProcess.StartDotnet("router-" + Name, Path.Combine(AppContext.BaseDirectory, "platform-router.dll"),
            [
                "--model", modelDir, "--workers", string.Join(',', _ports.Select(p => $"http://127.0.0.1:{p}")), "--port", "0",
                "--Logging:LogLevel:Default", "Warning",
            ]);
            RouterUrl = new Uri(await _router.WaitForLineAsync("PLATFORM_ROUTER_LISTENING", TimeSpan.FromSeconds(60), cancellationToken));
            await WaitForPoolAsync(cancellationToken);
        }

        /// <summary>Until the router's /readyz counts both workers in its pool.</summary>
        public async Task WaitForPoolAsync(CancellationToken cancellationToken)
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (DateTime.UtcNow < deadline)
            {
                try
                {
                    if ((await http.GetStringAsync(new Uri(RouterUrl!, "/readyz"), cancellationToken)).Contains("\"workers_in_pool\":2", StringComparison.Ordinal)) return;
                }
                catch (HttpRequestException)
                {
                    // not ready yet
                }
                await Task.Delay(100, cancellationToken);
            }
            throw new InvalidOperationException($"{Name}: the router never had both workers in its pool");
        }

        /// <summary>SIGKILLs the worker generating now (its vllm:num_requests_running is above 0); its index, or -1 if none is.
        /// (The x-platform-worker header would name it, but a long prompt's keep-alive comments start the response before it is known.)</summary>
        public async Task<int> KillGeneratingAsync(CancellationToken cancellationToken)
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            for (int i = 0; i < _workers.Length; i++)
            {
                string metrics = await http.GetStringAsync(new Uri(_workers[i]!.HttpAddress, "/metrics"), cancellationToken);
                if (!metrics.Split('\n').Any(l => l.StartsWith("vllm:num_requests_running{", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal))) continue;
                _workers[i]!.Kill();
                return i;
            }
            return -1;
        }

        public async Task RestartAsync(int i, CancellationToken cancellationToken)
        {
            await _workers[i]!.DisposeAsync();
            _workers[i] = await WorkerProcess.StartAsync(WorkerArgs(i), readyTimeout: TimeSpan.FromMinutes(5), cancellationToken: cancellationToken);
            await WaitForPoolAsync(cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            if (_router is not null) await _router.DisposeAsync();
            foreach (var w in _workers)
                if (w is not null) await w.DisposeAsync();
        }
    }

    public static async Task<int> Run(string[] args)
    {
        bool quick = args.Contains("--quick");
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 240;
        int rounds = quick ? 2 : 8, promptTokens = quick ? 1024 : 4096, maxTokens = quick ? 64 : 128;
        string? jsonPath = null;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--quick": break;
                    case "--rounds": rounds = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--prompt": promptTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--max-tokens": maxTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--json": jsonPath = Next(); break;
                    default: throw new FormatException($"unknown argument '{args[i]}'");
                }
            }
            if (rounds < 1 || promptTokens < 16 || maxTokens < 16) throw new FormatException("--rounds must be ≥ 1, --prompt and --max-tokens ≥ 16");
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        jsonPath ??= Path.Combine("bench", "results", $"migration-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");

        string modelDir = BenchModels.Ensure("small");
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };

        var started = DateTime.UtcNow;
        var results = new List<KillResult>();
        AnsiConsole.MarkupLine($"migration: small preset, 2 workers per cluster (--threads 1), prompts of {promptTokens} tokens, max_tokens {maxTokens}, " +
                               $"{rounds} interleaved rounds of (tier off, tier remote)");
        await using var redis = await RedisServerProcess.StartAsync();
        await using var off = new Cluster("off", modelDir, new WorkerArguments { KvTier = "off", KvTokens = promptTokens + maxTokens + 1024 });
        await using var remote = new Cluster("remote", modelDir, new WorkerArguments
        {
            KvTier = "remote", Redis = redis.Address, KvHostMemory = "512MB", KvTokens = promptTokens + maxTokens + 1024,
        });
        AnsiConsole.MarkupLine("[grey]starting both clusters…[/]");
        await off.StartAsync(cts.Token);
        await remote.StartAsync(cts.Token);
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(10) };

        // JIT and libtorch start-up: one undisturbed request per cluster.
        foreach (var cluster in new[] { off, remote }) await StreamAsync(http, cluster, BenchModels.RandomPrompt(modelDir, 256, 1), 8, null, cts.Token);

        var rng = new Random(7);
        for (int round = 0; round < rounds; round++)
        {
            foreach (var cluster in new[] { off, remote })
            {
                var prompt = BenchModels.RandomPrompt(modelDir, promptTokens, 1000 + round * 2 + (cluster == off ? 0 : 1));
                int killAt = rng.Next(4, maxTokens / 2);
                var r = await KillRoundAsync(http, cluster, prompt, maxTokens, killAt, round, cts.Token);
                results.Add(r);
                AnsiConsole.MarkupLine($"  round {round + 1} {cluster.Name,-6}: killed at token {killAt,3}, gap {r.GapSeconds,6:F2} s of {r.TotalSeconds,6:F2} s ({r.GapShare:P0})" +
                                       (r.Ok ? "" : $" [red]{Markup.Escape(r.Error ?? "")}[/]"));
            }
        }

        var summary = results.GroupBy(r => r.Mode).Select(g =>
        {
            var ok = g.Where(r => r.Ok).ToList();
            var gaps = ok.Select(r => r.GapSeconds).Order().ToList();
            return new
            {
                mode = g.Key,
                kills = g.Count(),
                failed = g.Count(r => !r.Ok),
                gap_p50_s = Percentile(gaps, 0.5),
                gap_p99_s = Percentile(gaps, 0.99),
                gap_share_median = Percentile([.. ok.Select(r => r.GapShare).Order()], 0.5),
                total_median_s = Percentile([.. ok.Select(r => r.TotalSeconds).Order()], 0.5),
            };
        }).ToList();
        var table = new Table().AddColumns("KV tier", "kills", "failed", "gap p50", "gap p99", "gap / request time (median)", "request time (median)");
        foreach (var s in summary)
            table.AddRow(s.mode, $"{s.kills}", $"{s.failed}", $"{s.gap_p50_s:F2} s", $"{s.gap_p99_s:F2} s", $"{s.gap_share_median:P0}", $"{s.total_median_s:F2} s");
        AnsiConsole.Write(table);

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            command = "migration " + string.Join(' ', args),
            machine = new { cores = Environment.ProcessorCount, cpu = LongPromptBench.CpuModel(), started_utc = started, os = Environment.OSVersion.ToString() },
            prompt_tokens = promptTokens,
            max_tokens = maxTokens,
            summary,
            kills = results,
        }, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"[grey]results: {Markup.Escape(jsonPath)}[/]");
        return results.All(r => r.Ok) ? 0 : 1;
    }

    private static double Percentile(List<double> sorted, double p) =>
        sorted.Count == 0 ? double.NaN : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];

    private static async Task<KillResult> KillRoundAsync(HttpClient http, Cluster cluster, int[] prompt, int maxTokens, int killAt, int round, CancellationToken cancellationToken)
    {
        int killed = -1;
        double previous = double.NaN, gap = double.NaN;
        var result = await StreamAsync(http, cluster, prompt, maxTokens, async (tokens, at) =>
        {
            // Tokens the dead worker had already sent still arrive after the kill: the gap is the longest silence after it.
            if (killed >= 0 && !(at - previous <= gap)) gap = at - previous;
            previous = at;
            if (killed < 0 && tokens >= killAt) killed = await cluster.KillGeneratingAsync(cancellationToken);
        }, cancellationToken);
        if (killed >= 0) await cluster.RestartAsync(killed, cancellationToken);
        string? error = result.Error ?? (killed < 0 ? "the stream ended before the kill" : double.IsNaN(gap) ? "no token after the kill" : null);
        return new KillResult(cluster.Name, round, prompt.Length, killAt, gap, result.TotalSeconds, error is null, error);
    }

    /// <summary>Streams a greedy completion; <paramref name="onTokens"/> sees the text events so far and when (s).</summary>
    private static async Task<(double TotalSeconds, string? Error)> StreamAsync(HttpClient http, Cluster cluster, int[] prompt, int maxTokens,
        Func<int, double, Task>? onTokens, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(cluster.RouterUrl!, "/v1/completions"))
        {
            Content = new ByteArrayContent(CompletionBodies.Streamed("small", prompt, maxTokens)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } },
        };
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (!response.IsSuccessStatusCode) return (clock.Elapsed.TotalSeconds, $"HTTP {(int)response.StatusCode}");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
        int events = 0;
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            if (line == "data: [DONE]") return (clock.Elapsed.TotalSeconds, null);
            if (line.Contains("\"error\"", StringComparison.Ordinal)) return (clock.Elapsed.TotalSeconds, $"stream error: {line[6..]}");
            if (onTokens is not null) await onTokens(++events, clock.Elapsed.TotalSeconds);
        }
        return (clock.Elapsed.TotalSeconds, "the stream ended without [DONE]");
    }
}
