// The chaos soak (RELIABILITY, issue 16), bounded to about three minutes: four
// platform-worker processes sharing a real redis-server KV tier, platform-router
// in front, and the official OpenAI .NET client streaming seeded chat requests,
// six at a time, while a worker is SIGKILLed and restarted on its port every
// ~20 s and Redis is killed and restarted once. Pass: no request fails, every
// completion equals its undisturbed reference (migration is token-exact), no
// worker holds a KV block or a request afterwards, and the router's memory stays
// flat.
using System.ClientModel;
using System.Diagnostics;
using System.Text;
using Grpc.Net.Client;
using OpenAI;
using OpenAI.Chat;
using Platform.Core.Networking;
using Platform.Core.Protos;

namespace Platform.Router.Tests;

[Collection(nameof(ChaosSoakTests))]
[CollectionDefinition(nameof(ChaosSoakTests), DisableParallelization = true)]
public sealed class ChaosSoakTests
{
    private static readonly TimeSpan Soak = TimeSpan.FromSeconds(150);

    private static long RssKb(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
            System.Globalization.CultureInfo.InvariantCulture);

#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental by the SDK.
    private static async Task<string> AskAsync(ChatClient chat, int i, CancellationToken ct)
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 96, Temperature = 0.8f, Seed = 1000 + i };
        var text = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage($"story {i}: tell me about the number {i * 7}")], options, ct))
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
        return text.ToString();
    }
#pragma warning restore OPENAI001

    [Fact]
    public async Task Four_workers_killed_in_turn_and_a_redis_restart_lose_no_request_and_change_no_token()
    {
        string model = TestModels.TinyLlama;
        await using var redis = await RedisServerProcess.StartAsync();
        int[] ports = [.. Enumerable.Range(0, 4).Select(_ => LoopbackPort.Free())];
        string[] Args(int port) => [.. ProcessClusterFixture.WorkerArgs(model, port), "--kv-tier", "remote", "--redis", redis.Address, "--kv-host-memory", "32MB"];
        var workers = await Task.WhenAll(ports.Select(p => WorkerProcess.StartAsync(Args(p))));
        RouterProcess? router = null;
        try
        {
            router = await RouterProcess.StartAsync(["--model", model, "--workers", string.Join(",", ports.Select(p => $"http://127.0.0.1:{p}")), "--port", "0",
                "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10", "--Router:InactivityTimeoutMs", "5000"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromSeconds(60) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.Content.ReadAsStringAsync().Result.Contains("\"workers_in_pool\":4", StringComparison.Ordinal),
                "all four workers in the pool", 30_000);
            var chat = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(router.Address, "/v1") });

            // References, undisturbed.
            const int Distinct = 24;
            var reference = new string[Distinct];
            for (int i = 0; i < Distinct; i++) reference[i] = await AskAsync(chat, i, CancellationToken.None);
            long rssAfterWarmup = RssKb(router.Id);

            using var stop = new CancellationTokenSource(Soak);
            var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
            int completed = 0, kills = 0;
            var clients = Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
            {
                for (int n = c; !stop.IsCancellationRequested; n += 6)
                {
                    int i = n % Distinct;
                    try
                    {
                        string text = await AskAsync(chat, i, CancellationToken.None);
                        if (text != reference[i]) failures.Enqueue($"request {i}: text differs from its reference\n  got:  {text}\n  want: {reference[i]}");
                        Interlocked.Increment(ref completed);
                    }
                    catch (Exception e) when (e is ClientResultException or IOException or HttpRequestException or InvalidOperationException)
                    {
                        failures.Enqueue($"request {i}: {e.GetType().Name}: {e.Message}");
                    }
                }
            })).ToList();

            var chaos = Task.Run(async () =>
            {
                var rng = new Random(16);
                var clock = Stopwatch.StartNew();
                bool redisRestarted = false;
                while (!stop.IsCancellationRequested)
                {
                    await Task.Delay(TimeSpan.FromSeconds(18 + rng.NextDouble() * 4));
                    if (stop.IsCancellationRequested) break;
                    int w = rng.Next(workers.Length);
                    workers[w].Kill();
                    await workers[w].WaitForExitAsync();
                    await workers[w].DisposeAsync();
                    kills++;
                    await Task.Delay(1000);
                    workers[w] = await WorkerProcess.StartAsync(Args(ports[w]));
                    if (!redisRestarted && clock.Elapsed > Soak / 2)
                    {
                        await redis.StopAsync();
                        await Task.Delay(1000);
                        await redis.StartAgainAsync();
                        redisRestarted = true;
                    }
                }
            });
            await Task.WhenAll(clients);
            await chaos;

            Assert.True(failures.IsEmpty, $"{failures.Count} of {completed + failures.Count} requests failed or changed:\n{string.Join("\n", failures.Take(5))}");
            Assert.True(kills >= 5, $"only {kills} workers were killed in {Soak.TotalSeconds} s");
            Assert.True(completed >= 50, $"only {completed} requests completed in {Soak.TotalSeconds} s");
            // Some streams were on a killed worker and moved (otherwise the soak proved nothing about migration).
            var migrations = (await http.GetStringAsync("/metrics")).Split('\n').Where(l => l.StartsWith("router_migrations_total{", StringComparison.Ordinal))
                .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            Assert.True(migrations >= 1, "no request was migrated during the soak");

            // Nothing leaked: every worker is back in the pool, idle, holding no KV block for a request.
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.Content.ReadAsStringAsync().Result.Contains("\"workers_in_pool\":4", StringComparison.Ordinal),
                "all four workers back in the pool", 30_000);
            foreach (var w in workers)
            {
                using var channel = GrpcChannel.ForAddress(w.GrpcAddress);
                var load = await new Inference.InferenceClient(channel).GetLoadAsync(new LoadRequest());
                Assert.True(load.Running == 0 && load.Waiting == 0 && load.KvBlocksUsed == 0,
                    $"worker {w.GrpcAddress} after the soak: {load.Running} running, {load.Waiting} waiting, {load.KvBlocksUsed} KV blocks in use");
            }
            // The router's memory is flat: what it holds per request is released (a leak of a few KB per request would show here).
            long rssAfter = RssKb(router.Id);
            Assert.True(rssAfter < rssAfterWarmup * 1.5 + 40_000, $"router RSS grew from {rssAfterWarmup / 1024} MB to {rssAfter / 1024} MB over {completed} requests");
        }
        finally
        {
            if (router is not null) await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}
