// `soak` mode: where each process's memory grows to under sustained traffic, and
// whether it stops. Runs `platform up` as users do (router, workers, the KV tier
// on, the embedded Garnet store inside the `platform` process) on the small
// preset, and drives it with C concurrent streams of never-seen prompts (random
// token ids, so every block is new and the KV tier keeps writing) for M minutes.
// Every 10 s: the resident size (VmRSS) of the `platform` process (which hosts
// Garnet), of each worker and of the router. At the end: each process's RSS
// after warm-up, at the end, its peak, the growth over the last half of the run,
// requests sent and failed. A JSON file and an SVG chart (RSS over time). With
// smaller store and host-tier budgets (--garnet-memory, --kv-host-memory) the
// plateau comes within minutes; the shipped budgets only move where it is.
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using Platform.Bench.Models;
using Platform.Bench.Processes;
using Platform.Bench.Plots;
using Platform.Core.Networking;
using Platform.Core.Processes;
using Spectre.Console;

namespace Platform.Bench;

internal static class SoakBench
{
    private const string Usage = "usage: soak [--minutes M] [--concurrency C] [--prompt TOKENS] [--garnet-memory SIZE] [--kv-host-memory SIZE] [--json FILE] [--svg FILE]";

    internal sealed record Sample(double Minutes, IReadOnlyDictionary<string, double> RssMb);

    public static async Task<int> Run(string[] args)
    {
        double minutes = 10;
        int concurrency = 3, promptTokens = 1024;
        string garnetMemory = "256m", hostMemory = "128MiB";
        string? jsonPath = null, svgPath = null;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--minutes": minutes = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--concurrency": concurrency = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--prompt": promptTokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--garnet-memory": garnetMemory = Next(); break;
                    case "--kv-host-memory": hostMemory = Next(); break;
                    case "--json": jsonPath = Next(); break;
                    case "--svg": svgPath = Next(); break;
                    default: throw new FormatException($"unknown argument '{args[i]}'");
                }
            }
            if (minutes <= 0 || concurrency < 1 || promptTokens < 16) throw new FormatException("--minutes > 0, --concurrency ≥ 1 and --prompt ≥ 16");
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        jsonPath ??= Path.Combine("bench", "results", $"soak-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
        svgPath ??= Path.Combine("bench", "results", "soak-rss.svg");

        string modelDir = BenchModels.Ensure("small");
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };

        int port = LoopbackPort.Free();
        AnsiConsole.MarkupLine($"soak: platform up (small preset, 2 workers, KV tier remote on the embedded Garnet, --garnet-memory {garnetMemory}, --kv-host-memory {hostMemory}), " +
                               $"{concurrency} concurrent streams of {promptTokens}-token never-seen prompts for {minutes:0.#} min");
        await using var up = ChildProcess.StartDotnet("up", Path.Combine(AppContext.BaseDirectory, "platform.dll"),
        [
            "up", "--model", modelDir, "--workers", "2", "--port", port.ToString(CultureInfo.InvariantCulture),
            "--garnet-memory", garnetMemory, "--kv-host-memory", hostMemory, "--worker-memory", "3GiB",
        ]);
        var url = new Uri(await up.WaitForLineAsync("PLATFORM_UP_URL", TimeSpan.FromMinutes(10), cts.Token));
        var processes = Processes(up.Id);
        AnsiConsole.MarkupLine($"[grey]ready at {url}; processes: {string.Join(", ", processes.Select(p => $"{p.Key} ({p.Value})"))}[/]");

        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
        int sent = 0, failed = 0, seed = 1;
        string? lastError = null;
        var samples = new List<Sample>();
        var clock = Stopwatch.StartNew();
        var end = TimeSpan.FromMinutes(minutes);
        async Task Loop()
        {
            while (clock.Elapsed < end && !cts.IsCancellationRequested)
            {
                int s = Interlocked.Increment(ref seed);
                int[] prompt = BenchModels.RandomPrompt(modelDir, promptTokens, s);
                Interlocked.Increment(ref sent);
                string? error = await SendAsync(http, url, prompt, cts.Token);
                if (error is not null)
                {
                    Interlocked.Increment(ref failed);
                    lastError = error;
                }
            }
        }
        var loops = Enumerable.Range(0, concurrency).Select(_ => Task.Run(Loop)).ToList();
        while (clock.Elapsed < end && !cts.IsCancellationRequested)
        {
            samples.Add(new Sample(clock.Elapsed.TotalMinutes, processes.ToDictionary(p => p.Key, p => ProcessMemory.RssMb(p.Value))));
            AnsiConsole.MarkupLine($"  {clock.Elapsed.TotalMinutes,5:F1} min: {string.Join(", ", samples[^1].RssMb.Select(kv => $"{kv.Key} {kv.Value:F0} MB"))}; {sent} requests, {failed} failed");
            await Task.Delay(TimeSpan.FromSeconds(10), cts.Token).ContinueWith(_ => { }, TaskScheduler.Default);
        }
        await Task.WhenAll(loops);
        samples.Add(new Sample(clock.Elapsed.TotalMinutes, processes.ToDictionary(p => p.Key, p => ProcessMemory.RssMb(p.Value))));

        // Warm-up: the first tenth of the run (JIT, pools). Growth: over the second half, where a plateau must show.
        var summary = processes.Keys.Select(name =>
        {
            double At(double fraction) => samples.First(s => s.Minutes >= fraction * minutes || s == samples[^1]).RssMb[name];
            double afterWarmup = At(0.1), half = At(0.5), last = samples[^1].RssMb[name];
            return new
            {
                process = name,
                rss_after_warmup_mb = afterWarmup,
                rss_at_half_mb = half,
                rss_end_mb = last,
                rss_peak_mb = samples.Max(s => s.RssMb[name]),
                growth_second_half_pct = (last - half) / half * 100,
            };
        }).ToList();
        var table = new Table().AddColumns("process", "after warm-up", "at half", "end", "peak", "growth, 2nd half");
        foreach (var s in summary)
            table.AddRow(s.process, $"{s.rss_after_warmup_mb:F0} MB", $"{s.rss_at_half_mb:F0} MB", $"{s.rss_end_mb:F0} MB", $"{s.rss_peak_mb:F0} MB", $"{s.growth_second_half_pct:+0.0;-0.0} %");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"{sent} requests, {failed} failed" + (lastError is null ? "" : $" (last: {Markup.Escape(lastError)})"));

        var chart = new SvgLineChart
        {
            Title = "Resident memory under sustained traffic (platform up)",
            XLabel = "minutes",
            YLabel = "RSS (MB)",
            Caption = $"{Environment.ProcessorCount} cores ({Router.LongPromptBench.CpuModel()}), {DateTime.UtcNow:yyyy-MM-dd}; small preset, 2 workers, " +
                      $"--garnet-memory {garnetMemory}, --kv-host-memory {hostMemory}; {concurrency} streams of {promptTokens}-token new prompts",
        };
        foreach (var name in processes.Keys) chart.Series.Add(new ChartSeries(name, [.. samples.Select(s => (s.Minutes, s.RssMb[name]))]));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(svgPath))!);
        await File.WriteAllTextAsync(svgPath, chart.Render());
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(new
        {
            command = "soak " + string.Join(' ', args),
            machine = new { cores = Environment.ProcessorCount, cpu = Router.LongPromptBench.CpuModel() },
            minutes, concurrency, prompt_tokens = promptTokens, garnet_memory = garnetMemory, kv_host_memory = hostMemory,
            sent, failed, summary, samples,
        }, new JsonSerializerOptions { WriteIndented = true }));
        AnsiConsole.MarkupLine($"[grey]results: {Markup.Escape(jsonPath)}, chart: {Markup.Escape(svgPath)}[/]");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>The `platform` process (it hosts the embedded Garnet store) and its children, named by role.</summary>
    private static Dictionary<string, int> Processes(int upPid)
    {
        var named = new Dictionary<string, int> { ["platform (Garnet)"] = upPid };
        int worker = 0;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
                if (ppid != upPid) continue;
                string cmd = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmd.Contains("platform-worker", StringComparison.Ordinal)) named[$"worker {worker++}"] = pid;
                else if (cmd.Contains("platform-router", StringComparison.Ordinal)) named["router"] = pid;
            }
            catch (IOException)
            {
                // the process ended meanwhile
            }
        }
        return named;
    }

    private static async Task<string?> SendAsync(HttpClient http, Uri url, int[] prompt, CancellationToken cancellationToken)
    {
        try
        {
            using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(url, "/v1/completions"))
            {
                Content = new ByteArrayContent(Router.CompletionBodies.Streamed("bench-small", prompt, 16, temperature: null)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } },
            };
            using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            string text = await response.Content.ReadAsStringAsync(cancellationToken);
            if (!response.IsSuccessStatusCode) return $"HTTP {(int)response.StatusCode}: {text[..Math.Min(200, text.Length)]}";
            return text.Contains("\"error\"", StringComparison.Ordinal) ? "stream error" : text.Contains("data: [DONE]", StringComparison.Ordinal) ? null : "no [DONE]";
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            return e.Message;
        }
    }
}
