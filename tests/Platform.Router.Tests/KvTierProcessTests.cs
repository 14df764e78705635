// The shared KV tier over real processes: redis-server, two platform-worker
// processes with --kv-tier remote, and platform-router with round-robin
// placement. The first request computes a long prefix on one worker (which
// writes its blocks through to Redis); the second, with the same prompt, lands
// on the other worker, which never saw it: it must report most of the prompt as
// cached from the remote tier (usage.prompt_tokens_details.cached_tokens_by_tier)
// and produce the same tokens.
using System.Net.Http.Json;
using System.Text.Json;
using StackExchange.Redis;

namespace Platform.Router.Tests;

public sealed class KvTierProcessTests
{
    [Fact]
    public async Task Second_request_on_the_other_worker_fetches_the_prefix_from_the_remote_tier()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        string model = TestModels.TinyLlama;
        string[] Args() => [.. ProcessClusterFixture.WorkerArgs(model), "--kv-tier", "remote", "--redis", redis.Address, "--kv-host-memory", "64MB"];
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(Args()), WorkerProcess.StartAsync(Args()));
        try
        {
            await using var router = await RouterProcess.StartAsync(["--model", model, "--workers", string.Join(",", workers.Select(w => w.GrpcAddress.ToString().TrimEnd('/'))),
                "--port", "0", "--policy", "round-robin", "--Router:HealthPeriodMs", "200"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromMinutes(2) };
            var deadline = DateTime.UtcNow.AddSeconds(30);
            // Both workers in the pool before the first request, so round-robin alternates between them.
            while (true)
            {
                using var ready = await http.GetAsync("/metrics");
                string text = await ready.Content.ReadAsStringAsync();
                if (text.Contains("router_workers_available", StringComparison.Ordinal)
                    && text.Split('\n').Any(l => l.StartsWith("router_workers_available", StringComparison.Ordinal) && l.TrimEnd().EndsWith(" 2", StringComparison.Ordinal)))
                    break;
                if (DateTime.UtcNow > deadline) throw new InvalidOperationException("both workers never joined the pool:\n" + router.OutputTail);
                await Task.Delay(100);
            }

            var rng = new Random(5);
            int[] prompt = [.. Enumerable.Range(0, 900).Select(_ => rng.Next(3, 500))];
            async Task<(string Worker, string Text, JsonElement Usage)> Ask()
            {
                using var response = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt, max_tokens = 8, temperature = 0, ignore_eos = true });
                string body = await response.Content.ReadAsStringAsync();
                Assert.True(response.IsSuccessStatusCode, body);
                var json = JsonDocument.Parse(body).RootElement;
                return (response.Headers.GetValues("x-platform-worker").Single(), json.GetProperty("choices")[0].GetProperty("text").GetString()!, json.GetProperty("usage").Clone());
            }

            var first = await Ask();
            Assert.Equal(0, first.Usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());

            // Write-through is asynchronous: wait until the prompt's 56 full blocks (899 usable tokens / 16) are in Redis.
            await using (var direct = await ConnectionMultiplexer.ConnectAsync(redis.Address))
            {
                var server = direct.GetServer(direct.GetEndPoints()[0]);
                var until = DateTime.UtcNow.AddSeconds(20);
                while (await server.DatabaseSizeAsync() < 56 && DateTime.UtcNow < until) await Task.Delay(50);
                Assert.True(await server.DatabaseSizeAsync() >= 56, "the first worker did not write its blocks through to Redis");
            }

            var second = await Ask();
            Assert.NotEqual(first.Worker, second.Worker);
            var details = second.Usage.GetProperty("prompt_tokens_details");
            var byTier = details.GetProperty("cached_tokens_by_tier");
            int remote = byTier.GetProperty("remote").GetInt32();
            Assert.Equal(56 * 16, details.GetProperty("cached_tokens").GetInt32());
            Assert.Equal(56 * 16, remote);
            Assert.Equal(0, byTier.GetProperty("device").GetInt32());
            Assert.Equal(first.Text, second.Text);

            // The worker's /metrics shows where the prefix came from.
            var lines = new List<string>();
            foreach (var w in workers)
            {
                using var metricsHttp = new HttpClient { BaseAddress = w.HttpAddress };
                lines.AddRange((await metricsHttp.GetStringAsync("/metrics")).Split('\n'));
            }
            Assert.Contains(lines, l => l.StartsWith("kv_tier_hit_blocks_total{", StringComparison.Ordinal) && l.Contains("tier=\"remote\"", StringComparison.Ordinal)
                && l.Split(' ')[^1] == "56");
            Assert.Contains(lines, l => l.StartsWith("kv_tier_written_blocks_total{", StringComparison.Ordinal) && l.Contains("tier=\"remote\"", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("kv_tier_remote_breaker_open", StringComparison.Ordinal) && l.Split(' ')[^1] == "0");
        }
        finally
        {
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}
