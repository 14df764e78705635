// Request migration with real processes (workers and router), in the shapes clients use: chat and
// completions, streamed and not, greedy and seeded; a worker SIGKILLed mid-generation, twice in one
// request over three workers; and with migration off, the clean error arrives within two health
// intervals of the kill (RELIABILITY.md criterion 1). Each disturbed run must equal the undisturbed
// one token for token, which only holds if the continuation is exact.
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Platform.Router.Tests;

public sealed class MigrationProcessTests
{
    // The small preset, not the tiny one: a tiny-model decode step is so cheap that 1000 tokens can finish between two
    // polls of the workers' metrics, and the kills below must land while a worker is generating.
    private static string Model => TestModels.Get(new Platform.Core.Models.RandomModelOptions { Preset = "small", Seed = 7, MaxPositionEmbeddings = 2048 });

    private static string Id(WorkerProcess w) => w.GrpcAddress.GetLeftPart(UriPartial.Authority);

    private static async Task<(WorkerProcess[] Workers, RouterProcess Router, HttpClient Http)> StartAsync(int workers, params string[] routerArgs)
    {
        var started = await Task.WhenAll(Enumerable.Range(0, workers).Select(_ => WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model))));
        var router = await RouterProcess.StartAsync(["--model", Model, "--workers", string.Join(",", started.Select(Id)), "--port", "0", .. routerArgs]);
        var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(90) };
        await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.Content.ReadAsStringAsync().Result.Contains($"\"workers_in_pool\":{workers}", StringComparison.Ordinal),
            $"{workers} workers in the pool", 30_000);
        return (started, router, http);
    }

    private static async Task StopAsync(WorkerProcess[] workers, RouterProcess router, HttpClient http)
    {
        http.Dispose();
        await router.DisposeAsync();
        foreach (var w in workers) await w.DisposeAsync();
    }

    /// <summary>The worker among the live ones that is generating now (its vllm:num_requests_running is above 0), or null.</summary>
    private static async Task<WorkerProcess?> GeneratingAsync(IEnumerable<WorkerProcess> workers)
    {
        foreach (var w in workers)
        {
            if (w.WaitForExitAsync().IsCompleted) continue;
            using var http = new HttpClient { BaseAddress = w.HttpAddress, Timeout = TimeSpan.FromSeconds(5) };
            string metrics;
            try
            {
                metrics = await http.GetStringAsync("/metrics");
            }
            catch (HttpRequestException)
            {
                continue;
            }
            if (metrics.Split('\n').Any(l => l.StartsWith("vllm:num_requests_running{", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal)))
                return w;
        }
        return null;
    }

    private static string Body(bool chat, bool stream, double temperature, int seed, int maxTokens) => chat
        ? JsonSerializer.Serialize(new { model = "tiny", messages = new[] { new { role = "user", content = "count with me" } }, max_tokens = maxTokens, ignore_eos = true, stream, temperature, seed })
        : JsonSerializer.Serialize(new { model = "tiny", prompt = "count with me", max_tokens = maxTokens, ignore_eos = true, stream, temperature, seed });

    private static string ChunkText(JsonElement choice, bool chat) =>
        chat ? (choice.GetProperty("delta").TryGetProperty("content", out var c) ? c.GetString() ?? "" : "") : choice.GetProperty("text").GetString()!;

    /// <summary>Streams a request; <paramref name="onText"/> sees the number of text events so far and may kill workers.</summary>
    private static async Task<(string Text, List<string> Events, int CompletionTokens)> StreamAsync(HttpClient http, bool chat, string body, Func<int, Task>? onText = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, chat ? "/v1/chat/completions" : "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<string>();
        var text = new StringBuilder();
        int textEvents = 0, completionTokens = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            events.Add(line);
            if (!line.StartsWith("data: {\"id\"", StringComparison.Ordinal)) continue;
            var root = JsonDocument.Parse(line[6..]).RootElement;
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object) completionTokens = usage.GetProperty("completion_tokens").GetInt32();
            if (root.GetProperty("choices").GetArrayLength() == 0) continue;
            string piece = ChunkText(root.GetProperty("choices")[0], chat);
            if (piece.Length == 0) continue;
            text.Append(piece);
            textEvents++;
            if (onText is not null) await onText(textEvents);
        }
        return (text.ToString(), events, completionTokens);
    }

    [Theory]
    [InlineData(true, 0.0, 5)]
    [InlineData(true, 0.9, 17)]
    [InlineData(false, 0.0, 23)]
    [InlineData(false, 0.9, 31)]
    public async Task A_worker_killed_mid_generation_of_a_non_streamed_request_is_invisible_to_the_client(bool chat, double temperature, int seed)
    {
        var (workers, router, http) = await StartAsync(2);
        try
        {
            string body = Body(chat, stream: false, temperature, seed, maxTokens: 1000);
            string path = chat ? "/v1/chat/completions" : "/v1/completions";
            static string Text(JsonElement root, bool chat) => chat
                ? root.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!
                : root.GetProperty("choices")[0].GetProperty("text").GetString()!;

            using var reference = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            var expected = JsonDocument.Parse(await reference.Content.ReadAsStringAsync()).RootElement;

            var sending = http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            WorkerProcess? serving = null;
            await RouterHost.Eventually(() => (serving = GeneratingAsync(workers).Result) is not null, "a worker generating the request", 30_000);
            // A moment into the generation (1000 tokens take seconds on this model): SIGKILL the worker generating it.
            await Task.Delay(new Random(seed).Next(50, 300));
            serving!.Kill();
            using var disturbed = await sending;
            string json = await disturbed.Content.ReadAsStringAsync();
            Assert.True(disturbed.IsSuccessStatusCode, json);
            var actual = JsonDocument.Parse(json).RootElement;

            // The kill landed mid-generation: the process is gone and the router moved the request (checked below).
            await serving.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(Text(expected, chat), Text(actual, chat));
            Assert.Equal("length", actual.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            Assert.Equal(1000, actual.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal(expected.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), actual.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            string metrics = await http.GetStringAsync("/metrics");
            Assert.True(metrics.Split('\n').Any(l => l.StartsWith("router_migrations_total{", StringComparison.Ordinal)),
                "no migration counted: the generation finished before the kill");
        }
        finally
        {
            await StopAsync(workers, router, http);
        }
    }

    [Theory]
    [InlineData(true, 0.0, 7)]
    [InlineData(true, 0.8, 13)]
    public async Task A_chat_stream_whose_worker_is_killed_continues_with_the_undisturbed_text(bool includeUsage, double temperature, int seed)
    {
        var (workers, router, http) = await StartAsync(2);
        try
        {
            string body = JsonSerializer.Serialize(new
            {
                model = "tiny", messages = new[] { new { role = "user", content = "count with me" } }, max_tokens = 900, ignore_eos = true,
                stream = true, stream_options = new { include_usage = includeUsage }, temperature, seed,
            });
            var reference = await StreamAsync(http, chat: true, body);
            int killAt = new Random(seed).Next(5, 60);
            WorkerProcess? killed = null;
            var disturbed = await StreamAsync(http, chat: true, body, async n =>
            {
                if (killed is null && n >= killAt && (killed = await GeneratingAsync(workers)) is not null) killed.Kill();
            });

            Assert.NotNull(killed);
            Assert.Equal("data: [DONE]", disturbed.Events[^1]);
            Assert.DoesNotContain(disturbed.Events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Equal(reference.Text, disturbed.Text);
            Assert.Equal(reference.CompletionTokens, disturbed.CompletionTokens);
        }
        finally
        {
            await StopAsync(workers, router, http);
        }
    }

    [Fact]
    public async Task Two_kills_in_one_request_over_three_workers_still_give_the_undisturbed_text()
    {
        var (workers, router, http) = await StartAsync(3);
        try
        {
            string body = Body(chat: false, stream: true, temperature: 0.7, seed: 42, maxTokens: 900);
            var reference = await StreamAsync(http, chat: false, body);
            var killed = new List<WorkerProcess>();
            var disturbed = await StreamAsync(http, chat: false, body, async n =>
            {
                if (n is not (20 or 120)) return;
                // The worker generating now: the first one, then the one the request moved to.
                WorkerProcess? serving = null;
                for (int i = 0; i < 50 && (serving = await GeneratingAsync(workers.Except(killed))) is null; i++) await Task.Delay(10);
                Assert.NotNull(serving);
                serving.Kill();
                killed.Add(serving);
            });

            Assert.Equal(2, killed.Count);
            Assert.Equal("data: [DONE]", disturbed.Events[^1]);
            Assert.DoesNotContain(disturbed.Events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Equal(reference.Text, disturbed.Text);
            string metrics = await http.GetStringAsync("/metrics");
            var migrations = metrics.Split('\n').Where(l => l.StartsWith("router_migrations_total{", StringComparison.Ordinal))
                .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(2, migrations);
            // Each move made the next worker compute again what it did not find cached: at least the tokens generated since the prompt.
            var recomputed = metrics.Split('\n').Where(l => l.StartsWith("router_migration_recomputed_tokens_total{", StringComparison.Ordinal))
                .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            Assert.True(recomputed >= 100, $"router_migration_recomputed_tokens_total is {recomputed} after moves at tokens 20 and 120");
        }
        finally
        {
            await StopAsync(workers, router, http);
        }
    }

    [Fact]
    public async Task With_migration_off_the_error_event_arrives_within_two_health_intervals_of_the_kill()
    {
        // The router's shipped health period (1 s): criterion 1 allows two of them.
        var (workers, router, http) = await StartAsync(2, "--migration-limit", "0");
        try
        {
            var killedAt = new Stopwatch();
            var killing = StreamAsync(http, chat: false, Body(chat: false, stream: true, temperature: 0, seed: 1, maxTokens: 1000), async n =>
            {
                if (n < 3 || killedAt.IsRunning || await GeneratingAsync(workers) is not { } serving) return;
                serving.Kill();
                killedAt.Start();
            });
            var result = await killing;
            Assert.True(killedAt.IsRunning, "no worker was generating while the stream ran");
            var sinceKill = killedAt.Elapsed;

            Assert.Equal("data: [DONE]", result.Events[^1]);
            ErrorShape.Assert(JsonDocument.Parse(result.Events[^2][6..]).RootElement);
            Assert.True(sinceKill <= TimeSpan.FromSeconds(2), $"the error event came {sinceKill.TotalMilliseconds:0} ms after the kill; the bound is two health intervals (2 s)");
        }
        finally
        {
            await StopAsync(workers, router, http);
        }
    }

    /// <summary>Criterion 2 with the shipped inactivity bound (30 s): a worker frozen with SIGSTOP mid-decode, its
    /// connection still open, loses the request to the other worker within the bound, the text is the undisturbed
    /// run's, and the router's in-flight gauges return to 0.</summary>
    [Fact]
    public async Task A_worker_frozen_mid_decode_loses_the_request_within_the_inactivity_bound_and_the_gauges_return_to_zero()
    {
        var (workers, router, http) = await StartAsync(2);
        WorkerProcess? frozen = null;
        try
        {
            // Long enough that the worker is still generating when the client has read a few tokens (the tiny model is fast).
            string body = Body(chat: false, stream: true, temperature: 0.6, seed: 8, maxTokens: 1000);
            var reference = await StreamAsync(http, chat: false, body);
            var clock = Stopwatch.StartNew();
            var lastEvent = TimeSpan.Zero;
            TimeSpan? resumedAfter = null;
            var disturbed = await StreamAsync(http, chat: false, body, async n =>
            {
                var now = clock.Elapsed;
                // Tokens already on their way when the worker froze still arrive; the gap after them is the silence.
                if (frozen is not null && (resumedAfter is null || now - lastEvent > resumedAfter)) resumedAfter = now - lastEvent;
                lastEvent = now;
                if (frozen is null && n >= 3 && await GeneratingAsync(workers) is { } serving)
                {
                    serving.Freeze();
                    frozen = serving;
                    lastEvent = clock.Elapsed;
                }
            });

            Assert.NotNull(frozen);
            Assert.NotNull(resumedAfter);
            // The longest silence after the freeze: noticed at 30 s, and the next worker's first token follows within a moment.
            Assert.True(resumedAfter <= TimeSpan.FromSeconds(32), $"the stream resumed {resumedAfter.Value.TotalSeconds:0.0} s after the freeze; the bound is the 30 s inactivity timeout");
            // (The HTTP/2 keep-alive ping can notice the dead connection first; either way there was a real silence.)
            Assert.True(resumedAfter >= TimeSpan.FromSeconds(5), $"the longest silence was {resumedAfter.Value.TotalSeconds:0.0} s: the freeze missed the serving worker");
            Assert.Equal("data: [DONE]", disturbed.Events[^1]);
            Assert.DoesNotContain(disturbed.Events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Equal(reference.Text, disturbed.Text);

            static double Gauge(string metrics, string name) => metrics.Split('\n')
                .Where(l => l.StartsWith(name, StringComparison.Ordinal) && (l.Length == name.Length || l[name.Length] is ' ' or '{'))
                .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            await RouterHost.Eventually(() =>
            {
                string metrics = http.GetStringAsync("/metrics").Result;
                return Gauge(metrics, "router_requests_in_flight") == 0 && Gauge(metrics, "router_prefill_tokens_in_flight") == 0;
            }, "the router's in-flight gauges back to 0");
        }
        finally
        {
            frozen?.Thaw();
            await StopAsync(workers, router, http);
        }
    }
}
