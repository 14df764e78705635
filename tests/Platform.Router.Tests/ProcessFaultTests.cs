// Faults with real platform-worker processes: the prefix index follows evictions
// and restarts (router app in-process so the test can read its index), and a
// worker killed with SIGKILL mid-stream (router as a process too).
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

    [Fact]
    public async Task Killing_a_worker_mid_stream_ends_that_stream_with_an_error_and_new_requests_succeed()
    {
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)), WorkerProcess.StartAsync(ProcessClusterFixture.WorkerArgs(Model)));
        RouterProcess? router = null;
        try
        {
            router = await RouterProcess.StartAsync(["--model", Model, "--workers", string.Join(",", workers.Select(Id)), "--port", "0",
                "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(60) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.StatusCode == HttpStatusCode.OK, "router ready");
            await Task.Delay(500);

            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"model":"tiny","prompt":"count","max_tokens":1000,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            string serving = response.Headers.GetValues("x-platform-worker").Single();
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync(), StringComparison.Ordinal);

            var victim = workers.Single(w => Id(w) == serving);
            victim.Kill();

            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            string rest = await reader.ReadToEndAsync(cts.Token);
            var events = rest.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1].Trim());
            ErrorShape.Assert(JsonDocument.Parse(events[^2].Trim()[6..]).RootElement);

            for (int i = 0; i < 3; i++)
            {
                using var ok = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = "still there?", max_tokens = 3 });
                Assert.True(ok.IsSuccessStatusCode, await ok.Content.ReadAsStringAsync());
                Assert.NotEqual(serving, ok.Headers.GetValues("x-platform-worker").Single());
            }
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}
