// Faults with real platform-worker processes: the prefix index follows evictions
// and restarts (router app in-process so the test can read its index), and a
// worker killed with SIGKILL mid-stream (router as a process too): the request
// moves to the other worker and the client's text is the undisturbed run's;
// with migration off, the stream ends with an error event.
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Platform.Router.Model;
using Platform.Router.Workers;

namespace Platform.Router.Tests;

public sealed class ProcessFaultTests
{
    private static string Model => TestModels.TinyLlama;

    private static string Id(WorkerProcess w) => w.GrpcAddress.GetLeftPart(UriPartial.Authority);

    private static string Words(int seed, int n) => string.Join(' ', Enumerable.Range(0, n).Select(i => $"p{seed}x{i}"));

    [Fact]
    public async Task The_index_forgets_evicted_blocks_and_a_restarted_workers_old_blocks()
    {
        // 24 blocks of 16 tokens: a few ~100-token prompts evict the first one.
        var worker = await WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model, kvBlocks: 24));
        RouterHost? router = null;
        try
        {
            string id = Id(worker);
            int port = worker.GrpcAddress.Port;
#pragma warning disable CA2000 // disposed in the finally below
            router = await RouterHost.StartAsync(Model, [id]);
#pragma warning restore CA2000
            await router.WaitForWorkers(1);
            var served = router.Services.GetRequiredService<ServedModel>();
            var hasher = router.Services.GetRequiredService<WorkerDirectory>().Identity!.Hasher;
            string promptA = Words(1, 40);
            ulong firstA = hasher.HashPrefix([.. served.EncodePrompt(promptA)])[0];

            async Task Send(string prompt)
            {
                var (status, body, _) = await router.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt, max_tokens = 1 }));
                Assert.True(status == 200, body.ToString());
            }

            await Send(promptA);
            await RouterHost.Eventually(() => router.Index.Holds(id, firstA), "the index learns prompt A's first block");

            for (int i = 2; i < 12 && router.Index.Holds(id, firstA); i++)
            {
                await Send(Words(i, 40));
                await Task.Delay(200);
            }
            await RouterHost.Eventually(() => !router.Index.Holds(id, firstA), "the index forgets A's evicted block");
            Assert.InRange(router.Index.WorkerBlockCount(id), 1, 24);

            // A again, then SIGKILL and restart on the same port: its old blocks must vanish.
            await Send(promptA);
            await RouterHost.Eventually(() => router.Index.Holds(id, firstA), "A cached again");
            worker.Kill();
            await worker.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            await RouterHost.Eventually(() => router.Pool.Current.Available.Count == 0, "the dead worker leaves the pool");
            Assert.Equal(0, router.Index.WorkerBlockCount(id));
            var (down, downBody, _) = await router.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = "x", max_tokens = 1 }));
            Assert.Equal(503, down);
            ErrorShape.Assert(downBody);

            await worker.DisposeAsync();
            worker = await WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model, port, kvBlocks: 24));
            await router.WaitForWorkers(1);
            await RouterHost.Eventually(() => router.Index.LastSequence(id) is not null, "the restarted worker's snapshot");
            Assert.False(router.Index.Holds(id, firstA));
            await Send(promptA);
            await RouterHost.Eventually(() => router.Index.Holds(id, firstA), "new blocks from the restarted worker");
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }

    /// <summary>Streams a completion; after <paramref name="killAfter"/> text chunks (if set), SIGKILLs the worker serving it.
    /// Returns the text and the raw events.</summary>
    private static async Task<(string Text, string[] Events, string Serving)> StreamAsync(HttpClient http, string body, WorkerProcess[] workers, int? killAfter)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string serving = response.Headers.GetValues("x-platform-worker").Single();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<string>();
        var text = new StringBuilder();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await reader.ReadLineAsync(cts.Token) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            events.Add(line);
            if (line.StartsWith("data: {\"id\"", StringComparison.Ordinal))
            {
                text.Append(JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
                if (events.Count == killAfter) workers.Single(w => Id(w) == serving).Kill();
            }
        }
        return (text.ToString(), [.. events], serving);
    }

    [Theory]
    [InlineData(0.0, 11)]
    [InlineData(0.8, 29)]
    public async Task Killing_a_worker_mid_stream_moves_the_request_and_the_client_gets_the_undisturbed_text(double temperature, int seed)
    {
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)), WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)));
        RouterProcess? router = null;
        try
        {
            router = await RouterProcess.StartAsync(["--model", Model, "--workers", string.Join(",", workers.Select(Id)), "--port", "0",
                "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(60) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.StatusCode == HttpStatusCode.OK, "router ready");
            await RouterHost.Eventually(() => http.GetStringAsync("/readyz").Result.Contains("\"workers_in_pool\":2", StringComparison.Ordinal), "both workers in the pool");

            string body = JsonSerializer.Serialize(new { model = "tiny", prompt = "count with me", max_tokens = 400, ignore_eos = true, stream = true, temperature, seed });
            var reference = await StreamAsync(http, body, workers, killAfter: null);
            // A random token between the 5th and the 60th: SIGKILL the worker streaming it.
            int killAt = new Random(seed).Next(5, 60);
            var disturbed = await StreamAsync(http, body, workers, killAfter: killAt);

            Assert.Equal("data: [DONE]", disturbed.Events[^1]);
            Assert.DoesNotContain(disturbed.Events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Equal(reference.Text, disturbed.Text);
            // Killed mid-stream: the process is reaped within seconds (the stream may end first on a fast model).
            await workers.Single(w => Id(w) == disturbed.Serving).WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_worker_drained_with_a_short_grace_mid_stream_hands_the_request_over_and_the_text_is_the_same()
    {
        string[] Args() => ["--model", Model, "--port", "0", "--http-port", "0", "--kv-blocks", "128", "--threads", "1", "--served-model-name", "tiny",
            "--drain-grace-seconds", "0.2"];
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(Args()), WorkerProcess.StartAsync(Args()));
        RouterProcess? router = null;
        try
        {
            router = await RouterProcess.StartAsync(["--model", Model, "--workers", string.Join(",", workers.Select(Id)), "--port", "0",
                "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(60) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.Content.ReadAsStringAsync().Result.Contains("\"workers_in_pool\":2", StringComparison.Ordinal), "both workers in the pool");

            string body = JsonSerializer.Serialize(new { model = "tiny", prompt = "count with me", max_tokens = 1000, ignore_eos = true, stream = true, temperature = 0.7, seed = 3 });
            var reference = await StreamAsync(http, body, workers, killAfter: null);
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var serving = workers.Single(w => Id(w) == response.Headers.GetValues("x-platform-worker").Single());
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var text = new StringBuilder();
            var events = new List<string>();
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                events.Add(line);
                if (!line.StartsWith("data: {\"id\"", StringComparison.Ordinal)) continue;
                text.Append(JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
                if (events.Count == 10) serving.Terminate(); // SIGTERM: drain for 0.2 s, then abort what is left
            }
            Assert.Equal("data: [DONE]", events[^1]);
            Assert.DoesNotContain(events, e => e.Contains("\"error\"", StringComparison.Ordinal));
            Assert.Equal(reference.Text, text.ToString());
            Assert.Equal(0, await serving.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)));
            // The drain's grace ended mid-generation: the request was handed over (aborted, then migrated), not finished there.
            string metrics = await http.GetStringAsync("/metrics");
            Assert.Contains(metrics.Split('\n'), l => l.StartsWith("router_migrations_total{", StringComparison.Ordinal) && l.Contains("reason=\"Aborted\"", StringComparison.Ordinal));
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }

    [Fact]
    public async Task With_migration_off_killing_a_worker_mid_stream_ends_that_stream_with_an_error_and_new_requests_succeed()
    {
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)), WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)));
        RouterProcess? router = null;
        try
        {
            router = await RouterProcess.StartAsync(["--model", Model, "--workers", string.Join(",", workers.Select(Id)), "--port", "0",
                "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10", "--migration-limit", "0"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(60) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.StatusCode == HttpStatusCode.OK, "router ready");
            await Task.Delay(500);

            var killed = await StreamAsync(http, """{"model":"tiny","prompt":"count","max_tokens":1000,"ignore_eos":true,"stream":true}""", workers, killAfter: 2);
            Assert.Equal("data: [DONE]", killed.Events[^1]);
            ErrorShape.Assert(JsonDocument.Parse(killed.Events[^2][6..]).RootElement);

            for (int i = 0; i < 3; i++)
            {
                using var ok = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "still there?", max_tokens = 3 });
                Assert.True(ok.IsSuccessStatusCode, await ok.Content.ReadAsStringAsync());
                Assert.NotEqual(killed.Serving, ok.Headers.GetValues("x-platform-worker").Single());
            }
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}
