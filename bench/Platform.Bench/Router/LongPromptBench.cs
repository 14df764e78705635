// `longprompt` mode: what a long prompt costs on a CPU worker, measured through
// the router over real processes (one platform-worker with its shipped
// scheduling defaults, --threads 2, a KV pool for 32K+ tokens, and
// platform-router with a generous inactivity timeout so the numbers measure the
// engine, not a timeout). Two measurements, each one round:
//   1. TTFT against prompt length, alone on the idle worker (one streamed
//      request at a time, never-seen random token ids, so no prefix hit);
//   2. TTFT of short requests (16 tokens, max_tokens 2, streamed) sent while
//      one long streamed prompt prefills: the first half a second after the
//      long one, then every --interval seconds (open loop: not waiting for the
//      previous short one), at most --shorts of them, and only while the long
//      one has no first token yet.
//      The long prompt's own TTFT and the SSE keep-alive comment lines it
//      received (": prefill 12288/32512 tokens, 45 s") are recorded too.
// TTFT is send → the first `data: {` line. At the end: peak RSS (VmHWM) of the
// worker and router processes. Results go to a JSON file and two SVG line
// charts (SvgLineChart) for docs/router.md.
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Bench.Processes;
using Platform.Bench.Plots;
using Spectre.Console;

namespace Platform.Bench.Router;

internal static class LongPromptBench
{
    private const string Usage =
        "usage: longprompt [--quick] [--sizes 4096,8192,16384,32000] [--lengths 1024,2048,4096,8192,16384,32000] [--shorts N]\n" +
        "                  [--interval S] [--kv-tokens N] [--json FILE] [--svg-dir DIR]";

    private const int ShortPromptTokens = 16, ShortMaxTokens = 2, LongMaxTokens = 1, Threads = 2;

    /// <summary>One streamed request: time to the first <c>data: {</c> line, and the SSE comments that came before it.</summary>
    internal sealed record StreamResult(bool Ok, string? Error, double TtftSeconds, double TotalSeconds, int KeepAliveComments, string? LastComment);

    internal sealed record ShortResult(double SentAtSeconds, double TtftSeconds, bool Ok, string? Error, bool LongHadFirstTokenWhenAnswered);

    internal sealed record ConcurrentResult(int LongPromptTokens, double LongTtftSeconds, bool LongOk, string? LongError, int LongKeepAliveComments,
        string? LongLastComment, IReadOnlyList<ShortResult> Shorts, double ShortTtftMedianSeconds, double ShortTtftMaxSeconds);

    internal sealed record LengthResult(int PromptTokens, double TtftSeconds, bool Ok, string? Error, int KeepAliveComments);

    public static async Task<int> Run(string[] args)
    {
        bool quick = args.Contains("--quick");
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 240;
        List<int> sizes = quick ? [2048, 4096] : [4096, 8192, 16384, 32000];
        List<int> lengths = quick ? [512, 1024, 2048] : [1024, 2048, 4096, 8192, 16384, 32000];
        int shorts = quick ? 3 : 5, kvTokens = 40_000;
        double interval = 2;
        string? jsonPath = null, svgDir = null;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
                List<int> Ints() => [.. Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
                switch (args[i])
                {
                    case "--quick": break;
                    case "--sizes": sizes = Ints(); break;
                    case "--lengths": lengths = Ints(); break;
                    case "--shorts": shorts = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--interval": interval = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--kv-tokens": kvTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--json": jsonPath = Next(); break;
                    case "--svg-dir": svgDir = Next(); break;
                    default: throw new FormatException($"unknown argument '{args[i]}'");
                }
            }
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        string modelDir = BenchModels.Ensure("small");
        int maxContext;
        using (var config = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(modelDir, "config.json"))))
            maxContext = config.RootElement.GetProperty("max_position_embeddings").GetInt32();
        var problems = new List<string>();
        foreach (int n in sizes.Concat(lengths).Where(n => n < 1 || n + ShortMaxTokens > maxContext || n + ShortMaxTokens > kvTokens))
            problems.Add($"a prompt of {n} tokens does not fit: the model's context is {maxContext}, the KV pool {kvTokens} tokens (--kv-tokens), and max_tokens needs room.");
        if (shorts < 0 || interval <= 0) problems.Add("--shorts must be ≥ 0 and --interval > 0.");
        if (problems.Count > 0)
        {
            foreach (var p in problems) Console.Error.WriteLine($"error: {p}");
            return 2;
        }
        // A smoke run's figures are not for the docs: unless told otherwise they go next to its JSON.
        svgDir ??= quick ? Path.Combine("bench", "results") : Path.Combine("docs", "images");
        jsonPath ??= Path.Combine("bench", "results", $"longprompt-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");

        int seed = 100;
        int[] Prompt(int tokens)
        {
            // A fresh seed per prompt: random ids never share a 16-token block, so nothing is a prefix-cache hit.
            return BenchModels.RandomPrompt(modelDir, tokens, seed++);
        }

        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        var started = DateTime.UtcNow;
        var total = Stopwatch.StartNew();
        var byLength = new List<LengthResult>();
        var concurrent = new List<ConcurrentResult>();
        double workerPeakMb, routerPeakMb;
        AnsiConsole.MarkupLine($"longprompt: small preset (context {maxContext}), 1 worker (--threads {Threads}, --kv-tokens {kvTokens}, scheduling defaults), " +
                               $"lengths {string.Join(',', lengths)}, long prompts {string.Join(',', sizes)} with up to {shorts} short requests every {interval:0.#} s");
        var options = new ClusterOptions(modelDir, Workers: 1, KvBlocksPerWorker: null, ThreadsPerWorker: Threads, MaxBatchTokens: null)
        {
            ExtraRouterArgs = ["--Router:InactivityTimeoutMs", "600000"],
        };
        await using (var cluster = new LocalCluster(options) { ExtraWorkerArgs = new() { KvTokens = kvTokens } })
        {
            AnsiConsole.MarkupLine("[grey]starting the worker and the router…[/]");
            await cluster.StartWorkersAsync(cts.Token);
            await cluster.StartRouterAsync("kv-aware", cts.Token);
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(30) };
            var client = new StreamingClient(http, cluster.RouterUrl!, Path.GetFileName(modelDir.TrimEnd('/')));

            // JIT and libtorch start-up in both processes, and the first prefill's allocations.
            foreach (int n in new[] { 256, 1024 })
            {
                var warm = await client.SendAsync(Prompt(n), ShortMaxTokens, null, cts.Token);
                if (!warm.Ok) throw new InvalidOperationException($"a warm-up request failed: {warm.Error}");
            }
            AnsiConsole.MarkupLine($"[grey]warmed up ({total.Elapsed.TotalSeconds:F0} s)[/]");

            foreach (int n in lengths.Order())
            {
                var r = await client.SendAsync(Prompt(n), LongMaxTokens, null, cts.Token);
                byLength.Add(new LengthResult(n, r.TtftSeconds, r.Ok, r.Error, r.KeepAliveComments));
                AnsiConsole.MarkupLine($"  alone: {n,6} tokens  TTFT {Seconds(r.TtftSeconds)}  ({n / r.TtftSeconds:F0} tok/s, {r.KeepAliveComments} keep-alive comments)" +
                                       (r.Ok ? "" : $" [red]{Markup.Escape(r.Error ?? "")}[/]"));
            }

            foreach (int n in sizes.Order())
            {
                var result = await ConcurrentAsync(client, Prompt(n), () => Prompt(ShortPromptTokens), shorts, interval, cts.Token);
                concurrent.Add(result);
                AnsiConsole.MarkupLine($"  long {n,6} tokens: TTFT {Seconds(result.LongTtftSeconds)}, {result.LongKeepAliveComments} keep-alive comments; " +
                                       $"{result.Shorts.Count} short requests, TTFT median {Seconds(result.ShortTtftMedianSeconds)}, max {Seconds(result.ShortTtftMaxSeconds)}" +
                                       (result.LongOk ? "" : $" [red]{Markup.Escape(result.LongError ?? "")}[/]"));
            }

            workerPeakMb = ProcessMemory.PeakRssMb(cluster.WorkerProcessIds[0]);
            routerPeakMb = cluster.RouterProcessId is { } router ? ProcessMemory.PeakRssMb(router) : double.NaN;
            AnsiConsole.MarkupLine($"peak RSS: worker {workerPeakMb:F0} MB, router {routerPeakMb:F0} MB; {total.Elapsed.TotalMinutes:F1} min in all");
        }

        string machine = $"{Environment.ProcessorCount} cores ({CpuModel()}), {started:yyyy-MM-dd}";
        string caption = $"{machine}; one round, indicative" + (quick ? "; SMOKE RUN (--quick), not for the docs" : "") +
                         $"\nsmall preset, one worker (--threads {Threads}, shipped scheduling defaults), through platform-router; streamed, token-id prompts";
        Directory.CreateDirectory(svgDir);
        var shortChart = new SvgLineChart
        {
            Title = "TTFT of short requests while a long prompt prefills",
            XLabel = "long prompt being prefilled (tokens)",
            YLabel = "time to first token (s)",
            LogX = true,
            LogY = true,
            Caption = caption,
        };
        shortChart.Series.Add(new ChartSeries($"short request ({ShortPromptTokens} tokens), median", [.. concurrent.Select(c => ((double)c.LongPromptTokens, c.ShortTtftMedianSeconds))]));
        shortChart.Series.Add(new ChartSeries($"short request ({ShortPromptTokens} tokens), max", [.. concurrent.Select(c => ((double)c.LongPromptTokens, c.ShortTtftMaxSeconds))]));
        shortChart.Series.Add(new ChartSeries("the long prompt itself", [.. concurrent.Select(c => ((double)c.LongPromptTokens, c.LongOk ? c.LongTtftSeconds : double.NaN))]));
        var lengthChart = new SvgLineChart
        {
            Title = "TTFT against prompt length, alone on an idle worker",
            XLabel = "prompt length (tokens)",
            YLabel = "time to first token (s)",
            LogX = true,
            LogY = true,
            Caption = caption,
        };
        lengthChart.Series.Add(new ChartSeries("TTFT (small preset)", [.. byLength.Select(r => ((double)r.PromptTokens, r.Ok ? r.TtftSeconds : double.NaN))]));
        string shortSvg = Path.Combine(svgDir, "longprompt-short-ttft.svg"), lengthSvg = Path.Combine(svgDir, "longprompt-ttft-by-length.svg");
        await File.WriteAllTextAsync(shortSvg, shortChart.Render());
        await File.WriteAllTextAsync(lengthSvg, lengthChart.Render());

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            command = "longprompt " + string.Join(' ', args),
            machine = new { cores = Environment.ProcessorCount, cpu = CpuModel(), started_utc = started, os = Environment.OSVersion.ToString() },
            setup = new
            {
                preset = "small", max_context = maxContext, workers = 1, threads = Threads, kv_tokens = kvTokens, max_batch_tokens = "worker default",
                router_inactivity_timeout_ms = 600_000, short_prompt_tokens = ShortPromptTokens, short_max_tokens = ShortMaxTokens,
                long_max_tokens = LongMaxTokens, shorts_per_long = shorts, interval_s = interval, rounds = 1,
            },
            by_length = byLength,
            concurrent,
            peak_rss_mb = new { worker = workerPeakMb, router = routerPeakMb },
            wall_s = total.Elapsed.TotalSeconds,
        }, new JsonSerializerOptions
        {
            WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
            NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        }));
        AnsiConsole.MarkupLine($"[grey]written {Markup.Escape(jsonPath)}, {Markup.Escape(shortSvg)}, {Markup.Escape(lengthSvg)}[/]");
        return byLength.All(r => r.Ok) && concurrent.All(c => c.LongOk && c.Shorts.All(s => s.Ok)) ? 0 : 1;
    }

    /// <summary>
    /// One long prompt, and short requests at fixed times while it has no first token: the first half a second after
    /// it (time to reach the worker and start prefilling), then every <paramref name="interval"/> seconds. Open loop: a
    /// short request does not wait for the previous one, so a worker that holds them all back shows it in every one.
    /// </summary>
    private static async Task<ConcurrentResult> ConcurrentAsync(StreamingClient client, int[] longPrompt, Func<int[]> shortPrompt, int shorts,
        double interval, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var longFirstToken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var longTask = client.SendAsync(longPrompt, LongMaxTokens, longFirstToken, cancellationToken);
        var sent = new List<Task<ShortResult>>();
        double next = 0.5;
        for (int i = 0; i < shorts; i++)
        {
            var wait = TimeSpan.FromSeconds(next) - clock.Elapsed;
            if (wait > TimeSpan.Zero) await Task.WhenAny(Task.Delay(wait, cancellationToken), longFirstToken.Task);
            cancellationToken.ThrowIfCancellationRequested();
            if (longFirstToken.Task.IsCompleted) break;
            double sentAt = clock.Elapsed.TotalSeconds;
            sent.Add(ShortAsync(shortPrompt(), sentAt));
            next = sentAt + interval;
        }
        var results = await Task.WhenAll(sent);
        var longResult = await longTask;
        var ttfts = results.Where(s => s.Ok).Select(s => s.TtftSeconds).ToList();
        return new ConcurrentResult(longPrompt.Length, longResult.TtftSeconds, longResult.Ok, longResult.Error, longResult.KeepAliveComments,
            longResult.LastComment, results, Percentiles.Of(ttfts, 0.5), ttfts.Count == 0 ? double.NaN : ttfts.Max());

        async Task<ShortResult> ShortAsync(int[] prompt, double sentAt)
        {
            var r = await client.SendAsync(prompt, ShortMaxTokens, null, cancellationToken);
            bool longAnswered = longFirstToken.Task.IsCompleted;
            AnsiConsole.MarkupLine($"    short sent at {sentAt,5:F1} s: TTFT {Seconds(r.TtftSeconds)}{(longAnswered ? ", after the long prompt's first token" : "")}" +
                                   (r.Ok ? "" : $" [red]{Markup.Escape(r.Error ?? "")}[/]"));
            return new ShortResult(sentAt, r.TtftSeconds, r.Ok, r.Error, longAnswered);
        }
    }

    private static string Seconds(double s) => double.IsNaN(s) ? "n/a" : s.ToString(s < 10 ? "0.00 s" : "0.0 s", CultureInfo.InvariantCulture);

    internal static string CpuModel()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }

    /// <summary>Streamed /v1/completions with token ids; counts the SSE comment lines that come before the first token.</summary>
    private sealed class StreamingClient(HttpClient http, Uri router, string model)
    {
        public async Task<StreamResult> SendAsync(int[] prompt, int maxTokens, TaskCompletionSource? firstToken, CancellationToken cancellationToken)
        {
            var clock = Stopwatch.StartNew();
            double ttft = double.NaN;
            int comments = 0;
            string? lastComment = null;
            try
            {
                using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(router, "/v1/completions"))
                {
                    Content = new ByteArrayContent(CompletionBodies.Streamed(model, prompt, maxTokens)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } },
                };
                using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
                if (!response.IsSuccessStatusCode)
                    return Failed($"HTTP {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
                while (await reader.ReadLineAsync(cancellationToken) is { } line)
                {
                    if (line.StartsWith(':'))
                    {
                        if (double.IsNaN(ttft))
                        {
                            comments++;
                            lastComment = line[1..].Trim();
                        }
                        continue;
                    }
                    if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                    if (line == "data: [DONE]") break;
                    if (line.Contains("\"error\"", StringComparison.Ordinal)) return Failed($"stream error: {line[6..]}");
                    if (double.IsNaN(ttft) && line.StartsWith("data: {", StringComparison.Ordinal))
                    {
                        ttft = clock.Elapsed.TotalSeconds;
                        firstToken?.TrySetResult();
                    }
                }
                return double.IsNaN(ttft) ? Failed("the stream ended without a token")
                    : new StreamResult(true, null, ttft, clock.Elapsed.TotalSeconds, comments, lastComment);
            }
            catch (Exception e) when (e is HttpRequestException or IOException || (e is TaskCanceledException && !cancellationToken.IsCancellationRequested))
            {
                return Failed($"{e.GetType().Name}: {e.Message}");
            }
            finally
            {
                // Whatever happened, the long request no longer holds the short ones back.
                firstToken?.TrySetResult();
            }

            StreamResult Failed(string why) => new(false, why, ttft, clock.Elapsed.TotalSeconds, comments, lastComment);
        }
    }
}
