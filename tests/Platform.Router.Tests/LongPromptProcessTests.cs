// A long prompt end to end with real processes (platform-worker and
// platform-router, the small preset, the worker's shipped scheduling defaults),
// with the router's bounds set low so a prefill of some seconds stands for one
// of minutes: inactivity 2 s, keep-alive 1 s. The prompt is served and the
// client sees progress comments; a short request sent during the prefill gets
// its first token long before the prefill ends (decodes and short prompts are
// not starved by a long one); a client that hangs up mid-prefill frees the
// worker's KV blocks within a second. And a worker frozen (SIGSTOP) mid-prefill
// loses the request to the other worker after the inactivity bound, which finds
// the blocks the first one wrote through to the shared KV tier (Redis) and says
// so in usage.cached_tokens.
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Grpc.Net.Client;
using Platform.Core.Models;
using Platform.Core.Protos;

namespace Platform.Router.Tests;

[Collection(nameof(LongPromptProcessTests))]
[CollectionDefinition(nameof(LongPromptProcessTests), DisableParallelization = true)]
public sealed class LongPromptProcessTests
{
    /// <summary>The small preset (4 layers, hidden 512, 32K context).</summary>
    private static string Small => TestModels.Get(new RandomModelOptions { Preset = "small", Seed = 3 });

    private static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(10, 4000)).ToArray();
    }

    private static StringContent Body(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    [Fact]
    public async Task A_long_prompt_is_served_with_progress_a_short_one_is_not_starved_and_a_hang_up_frees_the_kv()
    {
        const int LongPrompt = 6144;
        await using var worker = await WorkerProcess.StartAsync(["--model", Small, "--port", "0", "--http-port", "0", "--threads", "2",
            "--kv-tokens", "16384", "--served-model-name", "small"]);
        await using var router = await RouterProcess.StartAsync(["--model", Small, "--workers", worker.GrpcAddress.ToString().TrimEnd('/'),
            "--port", "0", "--Router:HealthPeriodMs", "200", "--Router:InactivityTimeoutMs", "2000", "--Router:KeepAliveIntervalMs", "1000"]);
        using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromMinutes(5) };
        using var channel = GrpcChannel.ForAddress(worker.GrpcAddress);
        var inference = new Inference.InferenceClient(channel);
        await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.IsSuccessStatusCode, "the router's pool has the worker", 30_000);
        int baselineBlocks = (await inference.GetLoadAsync(new LoadRequest())).KvBlocksUsed;

        // 1. The long prompt, streamed; a short one joins once the long one reports progress.
        var clock = Stopwatch.StartNew();
        using var longRequest = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = Body(new { model = "small", prompt = Prompt(LongPrompt, 1), max_tokens = 4, ignore_eos = true, stream = true }),
        };
        using var longResponse = await http.SendAsync(longRequest, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)longResponse.StatusCode);
        using var reader = new StreamReader(await longResponse.Content.ReadAsStreamAsync());
        var lines = new List<string>();
        TimeSpan? shortFirstToken = null;
        Task? shortRequest = null;
        TimeSpan longFirstToken = default;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            lines.Add(line);
            if (shortRequest is null && line.StartsWith(": prefill ", StringComparison.Ordinal))
            {
                shortRequest = Task.Run(async () =>
                {
                    var sent = Stopwatch.StartNew();
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                    {
                        Content = Body(new { model = "small", prompt = Prompt(16, 2), max_tokens = 2, ignore_eos = true, stream = true }),
                    };
                    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                    using var shortReader = new StreamReader(await response.Content.ReadAsStreamAsync());
                    while (await shortReader.ReadLineAsync() is { } l)
                        if (l.StartsWith("data: {", StringComparison.Ordinal)) { shortFirstToken ??= sent.Elapsed; }
                });
            }
            if (line.StartsWith("data: {", StringComparison.Ordinal) && longFirstToken == default) longFirstToken = clock.Elapsed;
        }
        Assert.NotNull(shortRequest);
        await shortRequest!;

        Assert.Equal("data: [DONE]", lines[^1]);
        Assert.DoesNotContain(lines, l => l.Contains("\"error\"", StringComparison.Ordinal));
        int comments = lines.Count(l => l.StartsWith(": prefill ", StringComparison.Ordinal));
        Assert.True(comments >= 2, $"{comments} progress comments in a {longFirstToken.TotalSeconds:0.0} s prefill:\n{string.Join('\n', lines.Take(20))}");
        // The short request waited for a step or two, not for the long prefill: a quarter of it is far more than enough,
        // and far less than the whole prefill a starving scheduler makes it wait.
        Assert.NotNull(shortFirstToken);
        Assert.True(shortFirstToken < longFirstToken / 4,
            $"the short request's first token took {shortFirstToken!.Value.TotalSeconds:0.00} s during a {longFirstToken.TotalSeconds:0.0} s prefill");

        // 2. Hang up mid-prefill: the worker's blocks are back within a second. The client closes its connection as a
        // process that goes away does (HttpClient would otherwise drain the response for up to 2 s to reuse it).
        using (var abandoned = new CancellationTokenSource())
        using (var handler = new SocketsHttpHandler { MaxResponseDrainSize = 0 })
        using (var hangUp = new HttpClient(handler, disposeHandler: false) { BaseAddress = router.Address })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = Body(new { model = "small", prompt = Prompt(LongPrompt, 3), max_tokens = 4, ignore_eos = true, stream = true }),
            };
            using var response = await hangUp.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, abandoned.Token);
            using var abandonedReader = new StreamReader(await response.Content.ReadAsStreamAsync(abandoned.Token));
            while (await abandonedReader.ReadLineAsync(abandoned.Token) is { } line && !line.StartsWith(": prefill ", StringComparison.Ordinal)) { }
            var load = await inference.GetLoadAsync(new LoadRequest());
            Assert.True(load.KvBlocksUsed > baselineBlocks, $"mid-prefill the worker holds {load.KvBlocksUsed} blocks (baseline {baselineBlocks})");
            var hungUp = Stopwatch.StartNew();
            await abandoned.CancelAsync();
            response.Dispose();
            while (true)
            {
                load = await inference.GetLoadAsync(new LoadRequest());
                if (load.Running == 0 && load.Waiting == 0 && load.KvBlocksUsed <= baselineBlocks) break;
                Assert.True(hungUp.Elapsed < TimeSpan.FromSeconds(1),
                    $"1 s after the hang-up the worker still runs {load.Running}, waits {load.Waiting}, holds {load.KvBlocksUsed} blocks (baseline {baselineBlocks})");
                await Task.Delay(20);
            }
        }
    }

    [Fact]
    public async Task A_worker_frozen_mid_prefill_loses_the_request_to_the_other_which_finds_the_written_through_blocks()
    {
        await using var redis = await RedisServerProcess.StartAsync();
        string[] Args() => ["--model", Small, "--port", "0", "--http-port", "0", "--threads", "1", "--kv-tokens", "16384", "--served-model-name", "small",
            "--kv-tier", "remote", "--redis", redis.Address, "--kv-host-memory", "256MB"];
        var workers = await Task.WhenAll(WorkerProcess.StartAsync(Args()), WorkerProcess.StartAsync(Args()));
        try
        {
            await using var router = await RouterProcess.StartAsync(["--model", Small, "--workers", string.Join(",", workers.Select(w => w.GrpcAddress.ToString().TrimEnd('/'))),
                "--port", "0", "--Router:HealthPeriodMs", "200", "--Router:InactivityTimeoutMs", "2000", "--Router:KeepAliveIntervalMs", "500"]);
            using var http = new HttpClient { BaseAddress = router.Address, Timeout = TimeSpan.FromMinutes(5) };
            await RouterHost.Eventually(() => http.GetAsync("/readyz").Result.Content.ReadAsStringAsync().Result.Contains("\"workers_in_pool\":2", StringComparison.Ordinal), "both workers in the pool", 30_000);
            var channels = workers.Select(w => GrpcChannel.ForAddress(w.GrpcAddress)).ToList();
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = Body(new { model = "small", prompt = Prompt(6144, 4), max_tokens = 2, ignore_eos = true, stream = true, stream_options = new { include_usage = true } }),
                };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                var lines = new List<string>();
                WorkerProcess? frozen = null;
                int frozenAt = 0;
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (line.Length == 0) continue;
                    lines.Add(line);
                    var m = System.Text.RegularExpressions.Regex.Match(line, @"^: prefill (\d+)/(\d+) tokens");
                    if (frozen is null && m.Success && int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * 3 >= int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture))
                    {
                        // A third prefilled: freeze the worker that runs it.
                        for (int i = 0; i < workers.Length && frozen is null; i++)
                            if ((await new Inference.InferenceClient(channels[i]).GetLoadAsync(new LoadRequest())).Running > 0) frozen = workers[i];
                        Assert.NotNull(frozen);
                        frozenAt = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                        frozen!.Freeze();
                    }
                }
                Assert.NotNull(frozen);
                Assert.Equal("data: [DONE]", lines[^1]);
                Assert.DoesNotContain(lines, l => l.Contains("\"error\"", StringComparison.Ordinal));
                var usage = JsonDocument.Parse(lines.Last(l => l.Contains("\"usage\"", StringComparison.Ordinal))[6..]).RootElement.GetProperty("usage");
                var details = usage.GetProperty("prompt_tokens_details");
                int cached = details.GetProperty("cached_tokens").GetInt32();
                int remote = details.GetProperty("cached_tokens_by_tier").GetProperty("remote").GetInt32();
                // The frozen worker's write queue froze with it, so not every block it computed is in Redis; but the
                // blocks it wrote through before the freeze (a third of the prompt was prefilled) are a prefix hit.
                Assert.True(remote > 0 && cached >= remote, $"the second worker reported {cached} cached tokens ({remote} remote) after the first froze at {frozenAt}");
                Assert.Equal(2, usage.GetProperty("completion_tokens").GetInt32());
            }
            finally
            {
                foreach (var c in channels) c.Dispose();
            }
        }
        finally
        {
            foreach (var w in workers)
            {
                w.Thaw();
                await w.DisposeAsync();
            }
        }
    }
}
