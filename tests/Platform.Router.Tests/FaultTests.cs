// Faults with in-process engine workers whose failures the tests switch on:
// retries before the first token (always on a different worker, bounded), 400s
// never retried, mid-stream failures as SSE error events, breakers, departures
// and rejoins, saturation, client disconnects and API keys.
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Grpc.Core;

namespace Platform.Router.Tests;

public sealed class FaultTests
{
    private static string Model => TestModels.TinyLlama;

    private static async Task<(InProcessWorker A, InProcessWorker B, RouterHost Router)> StartAsync(params string[] routerArgs)
    {
        var a = await TestWorkers.StartAsync(Model);
        var b = await TestWorkers.StartAsync(Model);
        var router = await RouterHost.StartAsync(Model, [a.Address, b.Address], routerArgs);
        await router.WaitForWorkers(2);
        return (a, b, router);
    }

    private static async Task StopAsync(params IAsyncDisposable[] all)
    {
        foreach (var d in all) await d.DisposeAsync();
    }

    private const string Small = """{"model":"tiny","prompt":"tell me a story","max_tokens":4,"temperature":0,"ignore_eos":true}""";

    private static string WorkerId(InProcessWorker w) => w.Address;

    [Fact]
    public async Task Failure_before_the_first_token_is_retried_on_another_worker()
    {
        var (a, b, router) = await StartAsync("--policy", "round-robin");
        try
        {
            a.Faults.FailBeforeFirstToken = StatusCode.Unavailable;
            for (int i = 0; i < 4; i++)
            {
                var (status, body, worker) = await router.PostAsync("/v1/completions", Small);
                Assert.True(status == 200, body.ToString());
                Assert.Equal(WorkerId(b), worker);
            }
            Assert.True(a.Faults.GenerateCalls >= 1, "round-robin sent some first attempts to the failing worker");
            Assert.Equal(4, b.Faults.GenerateCalls);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task When_every_worker_fails_the_answer_is_a_502_after_one_try_each()
    {
        var (a, b, router) = await StartAsync();
        try
        {
            a.Faults.FailBeforeFirstToken = StatusCode.Internal;
            b.Faults.FailBeforeFirstToken = StatusCode.Unavailable;
            var (status, body, _) = await router.PostAsync("/v1/completions", Small);
            Assert.Equal(502, status);
            ErrorShape.Assert(body);
            Assert.Equal(1, a.Faults.GenerateCalls);
            Assert.Equal(1, b.Faults.GenerateCalls);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_worker_400_reaches_one_worker_exactly_once()
    {
        var (a, b, router) = await StartAsync();
        try
        {
            a.Faults.FailBeforeFirstToken = StatusCode.InvalidArgument;
            b.Faults.FailBeforeFirstToken = StatusCode.InvalidArgument;
            var (status, body, _) = await router.PostAsync("/v1/completions", Small);
            Assert.Equal(400, status);
            ErrorShape.Assert(body);
            Assert.Equal(1, a.Faults.GenerateCalls + b.Faults.GenerateCalls);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_mid_stream_failure_no_worker_can_take_over_ends_the_stream_with_an_error_event_and_done()
    {
        var (a, b, router) = await StartAsync();
        try
        {
            a.Faults.FailAfterChunks = 2;
            b.Faults.FailAfterChunks = 2;
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"model":"tiny","prompt":"tell me a story","max_tokens":40,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = (await response.Content.ReadAsStringAsync(cts.Token)).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            var error = JsonDocument.Parse(events[^2][6..]).RootElement;
            ErrorShape.Assert(error);
            Assert.True(events.Length >= 4, "tokens were streamed before the failure");
            // The request moved once (to the other worker, which failed too); nothing was left to move it to.
            Assert.Equal(2, a.Faults.GenerateCalls + b.Faults.GenerateCalls);

            var (status, body, _) = await router.PostAsync("/v1/completions", """{"model":"tiny","prompt":"x","max_tokens":40,"ignore_eos":true}""");
            Assert.Equal(502, status);
            ErrorShape.Assert(body);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_frozen_worker_ends_the_stream_with_a_timeout_error_and_in_flight_counts_return_to_zero()
    {
        var (a, b, router) = await StartAsync("--Router:InactivityTimeoutMs", "1000");
        try
        {
            a.Faults.StallAfterChunks = 2;
            b.Faults.StallAfterChunks = 2;
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent("""{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":50,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            var started = DateTime.UtcNow;
            using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(10), "the stream ended soon after the inactivity timeout");
            Assert.Equal("data: [DONE]", events[^1]);
            ErrorShape.Assert(JsonDocument.Parse(events[^2][6..]).RootElement, code: "timeout");
            await RouterHost.Eventually(() => router.Pool.Current.Available.All(w => w.InFlightRequests == 0 && w.InFlightPrefillTokens == 0), "in-flight counters back to 0");
            await RouterHost.Eventually(() => a.Engine.GetStats().Running + b.Engine.GetStats().Running == 0, "the stalled worker call was cancelled");
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_failing_worker_trips_its_breaker_and_stops_getting_traffic()
    {
        var (a, b, router) = await StartAsync("--policy", "round-robin", "--Router:BreakerMinimumThroughput", "2",
            "--Router:BreakerFailureRatio", "0.5", "--Router:BreakerBreakMs", "60000");
        try
        {
            a.Faults.FailBeforeFirstToken = StatusCode.Internal;
            for (int i = 0; i < 12; i++)
            {
                var (status, body, _) = await router.PostAsync("/v1/completions", Small);
                Assert.True(status == 200, body.ToString());
            }
            // Round-robin without a breaker would have tried the failing worker 6 times.
            Assert.InRange(a.Faults.GenerateCalls, 2, 3);
            Assert.True(router.Pool.Current.Available.Single(w => w.Id == WorkerId(a)).IsBreakerOpen(DateTimeOffset.UtcNow));
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task An_unreachable_worker_leaves_the_pool_and_the_index_and_rejoins_empty_after_a_restart()
    {
        var (a, b, router) = await StartAsync();
        int port = a.Port;
        string id = WorkerId(a);
        try
        {
            // Give a some cached blocks the index knows about.
            string prompt = JsonSerializer.Serialize(new { model = "tiny", prompt = string.Join(' ', Enumerable.Range(0, 80).Select(i => $"t{i}")), max_tokens = 1 });
            for (int i = 0; i < 12 && router.Index.WorkerBlockCount(id) == 0; i++)
            {
                await router.PostAsync("/v1/completions", prompt, session: "s" + i);
                await Task.Delay(300);
            }
            await RouterHost.Eventually(() => router.Index.WorkerBlockCount(id) > 0, "a's blocks in the index");

            await a.DisposeAsync();
            // The pool drops it first (no more traffic), then its subscription stops and the index forgets it.
            await RouterHost.Eventually(() => router.Pool.Current.Available.Count == 1, "a leaves the pool");
            await RouterHost.Eventually(() => router.Index.WorkerBlockCount(id) == 0, "the index forgets a's blocks");
            var (status, _, worker) = await router.PostAsync("/v1/completions", Small);
            Assert.Equal(200, status);
            Assert.Equal(WorkerId(b), worker);

            a = await TestWorkers.StartAsync(Model, port);
            await router.WaitForWorkers(2);
            await RouterHost.Eventually(() => router.Index.LastSequence(id) is not null, "a's fresh snapshot");
            Assert.Equal(0, router.Index.WorkerBlockCount(id));
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task Saturation_answers_429_in_openai_shape()
    {
        var (a, b, router) = await StartAsync("--Router:MaxConcurrentRequests", "1");
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"model":"tiny","prompt":"a long one","max_tokens":400,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var first = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            int before = a.Faults.GenerateCalls + b.Faults.GenerateCalls;
            var (status, body, _) = await router.PostAsync("/v1/completions", Small);
            Assert.Equal(429, status);
            ErrorShape.Assert(body, code: "rate_limit_exceeded");
            Assert.Equal(before, a.Faults.GenerateCalls + b.Faults.GenerateCalls);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_client_disconnect_cancels_the_worker_call_and_frees_its_blocks()
    {
        var (a, b, router) = await StartAsync();
        try
        {
            // Each engine step takes at least 50 ms, so the 900 tokens asked for need 45 s. Criterion 3: the
            // cancel reaches the engine within 1 s of the disconnect, and its blocks are back.
            a.Engine.BeforeStep = () => Thread.Sleep(50);
            b.Engine.BeforeStep = () => Thread.Sleep(50);
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"model":"tiny","prompt":"go on forever","max_tokens":900,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            // A client that hangs up: disposing the response closes the connection at once (HttpClient's default
            // would first drain the rest of the response for up to 2 s to reuse the connection).
            using var hangingUp = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = router.Http.BaseAddress };
            var response = await hangingUp.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[256];
            Assert.True(await stream.ReadAsync(buffer) > 0);
            await RouterHost.Eventually(() => a.Engine.GetStats().Running + b.Engine.GetStats().Running == 1, "the request runs on a worker");

            var disconnected = System.Diagnostics.Stopwatch.StartNew();
            response.Dispose();
            request.Dispose();
            await RouterHost.Eventually(() => a.Engine.GetStats().Running + b.Engine.GetStats().Running == 0
                && a.Engine.GetStats().KvBlocksUsed + b.Engine.GetStats().KvBlocksUsed == 0, "the engine aborts the request", 5_000);
            Assert.True(disconnected.Elapsed <= TimeSpan.FromSeconds(1), $"the engine let go of the request {disconnected.ElapsedMilliseconds} ms after the disconnect; the bound is 1 s");
            Assert.Equal(1, a.Faults.GenerateCalls + b.Faults.GenerateCalls); // no failover after a disconnect
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    /// <summary>
    /// Criterion 4: a fault in the forward pass. Every request in flight on that worker gets an answer (with
    /// migration, the default, it finishes on the other worker; without, a terminal error event), the worker
    /// leaves the router's pool within one health period (1 s, the shipped default) and its /readyz fails, and
    /// its KV blocks are released.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task An_engine_fault_answers_every_request_in_flight_and_takes_the_worker_out_within_one_health_period(bool migration)
    {
        var (a, b, router) = await StartAsync(migration ? ["--Router:HealthPeriodMs", "1000"] : ["--Router:HealthPeriodMs", "1000", "--migration-limit", "0"]);
        try
        {
            a.Engine.BeforeStep = () => Thread.Sleep(20);
            b.Engine.BeforeStep = () => Thread.Sleep(20);
            const string body = """{"model":"tiny","prompt":"PROMPT","max_tokens":300,"ignore_eos":true,"stream":true,"temperature":0}""";
            // Pin all three to A with one session, so the fault hits every one of them.
            var streams = Enumerable.Range(0, 3).Select(async i =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = new StringContent(body.Replace("PROMPT", $"story {i}", StringComparison.Ordinal), Encoding.UTF8, "application/json"),
                };
                request.Headers.Add("x-session-id", "pinned");
                using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                return (response.Headers.GetValues("x-platform-worker").Single(), await response.Content.ReadAsStringAsync());
            }).ToList();
            await RouterHost.Eventually(() => a.Engine.GetStats().Running + b.Engine.GetStats().Running == 3, "three requests generating");
            var victim = a.Engine.GetStats().Running == 3 ? a : b;
            var healthy = victim == a ? b : a;

            var faulted = System.Diagnostics.Stopwatch.StartNew();
            victim.Engine.BeforeStep = () => throw new InvalidOperationException("injected fault in the forward pass");
            await RouterHost.Eventually(() => router.Pool.Current.Available.All(w => w.Id != WorkerId(victim)), "the faulted worker leaves the pool", 5_000);
            var left = faulted.Elapsed;
            Assert.True(left <= TimeSpan.FromMilliseconds(1000 + 300), $"the faulted worker left the pool {left.TotalMilliseconds:0} ms after the fault; the bound is one health period (1 s)");

            foreach (var (worker, events) in await Task.WhenAll(streams))
            {
                Assert.Equal(WorkerId(victim), worker);
                var lines = events.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
                Assert.Equal("data: [DONE]", lines[^1]);
                if (migration)
                {
                    Assert.DoesNotContain(lines, l => l.Contains("\"error\"", StringComparison.Ordinal));
                    Assert.Contains("\"finish_reason\":\"length\"", lines[^2], StringComparison.Ordinal);
                }
                else
                {
                    ErrorShape.Assert(JsonDocument.Parse(lines[^2][6..]).RootElement);
                    Assert.Contains("engine failure", lines[^2], StringComparison.Ordinal);
                }
            }

            using var probe = new HttpClient { BaseAddress = victim.HttpAddress };
            using var ready = await probe.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Equal(0, victim.Engine.GetStats().KvBlocksUsed);
            Assert.Equal(0, victim.Engine.GetStats().Running + victim.Engine.GetStats().Waiting);
            await RouterHost.Eventually(() => healthy.Engine.GetStats().Running == 0 && healthy.Engine.GetStats().KvBlocksUsed == 0, "the healthy worker idle again");
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task With_an_api_key_every_route_but_health_readiness_and_metrics_needs_it()
    {
        var (a, b, router) = await StartAsync("--api-key", "sekret,other");
        try
        {
            foreach (var path in new[] { "/v1/models", "/v2/nothing", "/metrics/extra", "/healthz/x" })
            {
                using var response = await router.Http.GetAsync(path);
                Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"GET {path} answered {response.StatusCode} without a key");
                ErrorShape.Assert(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement, code: "invalid_api_key");
            }
            foreach (var path in new[] { "/v1/completions", "/v1/chat/completions" })
            {
                var (status, body, _) = await router.PostAsync(path, Small);
                Assert.Equal(401, status);
                ErrorShape.Assert(body, code: "invalid_api_key");
            }
            Assert.Equal(0, a.Faults.GenerateCalls + b.Faults.GenerateCalls);

            // Probes and Prometheus (the operator's autoscaler among them) carry no key, as with vLLM.
            Assert.Equal(HttpStatusCode.OK, (await router.Http.GetAsync("/healthz")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await router.Http.GetAsync("/readyz")).StatusCode);
            using (var metrics = await router.Http.GetAsync("/metrics"))
            {
                Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
                Assert.Contains(Platform.Core.Telemetry.RouterMetricNames.QueuedPrefillTokens, await metrics.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            using var wrong = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "nope");
            Assert.Equal(HttpStatusCode.Unauthorized, (await router.Http.SendAsync(wrong)).StatusCode);
            using var right = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "other");
            Assert.Equal(HttpStatusCode.OK, (await router.Http.SendAsync(right)).StatusCode);
        }
        finally
        {
            await StopAsync(router, a, b);
        }
    }

    [Fact]
    public async Task A_worker_with_a_different_model_fingerprint_is_refused()
    {
        var a = await TestWorkers.StartAsync(Model);
        // Same shapes and vocabulary, another config.json: a different fingerprint, hence a different hash seed.
        var other = await TestWorkers.StartAsync(TestModels.Get(new Platform.Core.Models.RandomModelOptions { Preset = "tiny", Seed = 7, MaxPositionEmbeddings = 2048 }));
        var router = await RouterHost.StartAsync(Model, [a.Address, other.Address]);
        try
        {
            await router.WaitForWorkers(1);
            await Task.Delay(1000); // five more health periods
            Assert.Single(router.Pool.Current.Available);
            Assert.NotEqual(a.Engine.Fingerprint.Id, other.Engine.Fingerprint.Id);
        }
        finally
        {
            await StopAsync(router, a, other);
        }
    }

    [Fact]
    public async Task Without_workers_it_is_not_ready_and_still_answers_in_openai_shape()
    {
        // Port 1 on loopback: nothing listens, so no worker ever joins.
        var router = await RouterHost.StartAsync(Model, ["http://127.0.0.1:1"], "--Router:MaxRequestBodyBytes", "2048");
        try
        {
            using (var ready = await router.Http.GetAsync("/readyz")) Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            using (var health = await router.Http.GetAsync("/healthz")) Assert.Equal(HttpStatusCode.OK, health.StatusCode);

            var (tooBig, tooBigBody, _) = await router.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = new string('x', 5000) }));
            Assert.Equal(413, tooBig);
            ErrorShape.Assert(tooBigBody, code: "request_too_large");

            var (none, noneBody, _) = await router.PostAsync("/v1/completions", Small);
            Assert.Equal(503, none);
            ErrorShape.Assert(noneBody, code: "no_workers");

            using var unknown = await router.Http.GetAsync("/v2/nothing");
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
            ErrorShape.Assert(JsonDocument.Parse(await unknown.Content.ReadAsStringAsync()).RootElement);
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    [Fact]
    public async Task Invalid_options_fail_the_start_with_fixes()
    {
        var e = Assert.Throws<RouterConfigurationException>(() => RouterApp.Build(["--workers", "ftp://x,", "--policy", "fastest", "--Router:MaxRetries", "99"]));
        Assert.Contains("--model DIR", e.Message, StringComparison.Ordinal);
        Assert.Contains("'ftp://x' is not an http://", e.Message, StringComparison.Ordinal);
        Assert.Contains("Policy is 'fastest'", e.Message, StringComparison.Ordinal);
        Assert.Contains("MaxRetries is 99", e.Message, StringComparison.Ordinal);
    }
}
