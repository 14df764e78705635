// The metric contract between router and operator, tested by running both sides: a real
// router (RouterApp on 127.0.0.1:0) in front of an in-process engine worker, under load,
// scraped over HTTP, and the text handed to the operator's own PrometheusRouterLoadSource.
// Names come from Platform.Core.Telemetry.RouterMetricNames on both sides.
using System.Text;
using Platform.Operator.Autoscaling;

namespace Platform.Router.Tests;

// Alone: every router in this process meters under the same meter name, and OpenTelemetry's
// exporter in one router host also sees another host's instruments of that name; while another
// test's router starts or stops, a scrape here may miss the contract's series (seen once in a
// full run). One router per process, as deployed, has no such neighbour.
[Collection(nameof(AutoscalerContractTests))]
[CollectionDefinition(nameof(AutoscalerContractTests), DisableParallelization = true)]
public sealed class AutoscalerContractTests
{
    [Fact]
    public async Task The_operator_reads_queued_prefill_and_kv_utilization_from_a_real_routers_metrics()
    {
        var worker = await TestWorkers.StartAsync(TestModels.TinyLlama, kvBlocks: 64);
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address]);
        using var gate = new ManualResetEventSlim(true);
        HttpResponseMessage? decoding = null;
        Task<HttpResponseMessage>? queued = null;
        try
        {
            await router.WaitForWorkers(1);
            var idle = await ReadAsync(router);
            Assert.Equal(0, idle.QueuedPrefillTokens);
            Assert.Equal(0, idle.KvUtilization);

            // A request decoding (slowly) holds KV blocks: the utilisation comes from the worker's load reports.
            worker.Engine.BeforeStep = () =>
            {
                gate.Wait();
                Thread.Sleep(50);
            };
            using var first = Completion("first one", 400);
            decoding = await router.Http.SendAsync(first, HttpCompletionOption.ResponseHeadersRead);
            Assert.True(decoding.IsSuccessStatusCode, await decoding.Content.ReadAsStringAsync());
            var busy = await EventuallyAsync(router, l => l.KvUtilization > 0, "KV utilisation above 0", () => worker.Engine.GetStats().ToString());
            Assert.InRange(busy.KvUtilization, 0, 1);

            // With the engine held between steps, a second prompt waits for its prefill: the queue is non-zero.
            gate.Reset();
            using var queuedRequest = Completion(string.Join(' ', Enumerable.Range(0, 60).Select(i => $"w{i}")), 4);
            queued = router.Http.SendAsync(queuedRequest, HttpCompletionOption.ResponseHeadersRead);
            var waiting = await EventuallyAsync(router, l => l.QueuedPrefillTokens > 0, "queued prefill tokens above 0", () => worker.Engine.GetStats().ToString());
            Assert.True(waiting.QueuedPrefillTokens >= 60, $"queued {waiting.QueuedPrefillTokens} tokens, expected at least the second prompt's");
            gate.Set();
            using (var second = await queued) Assert.True(second.IsSuccessStatusCode, await second.Content.ReadAsStringAsync());
        }
        finally
        {
            gate.Set();
            worker.Engine.BeforeStep = null;
            decoding?.Dispose();
            if (queued is not null) (await queued).Dispose();
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }

    private static HttpRequestMessage Completion(string prompt, int maxTokens) => new(HttpMethod.Post, "/v1/completions")
    {
        Content = new StringContent(System.Text.Json.JsonSerializer.Serialize(new { model = "tiny", prompt, max_tokens = maxTokens, ignore_eos = true, stream = true }),
            Encoding.UTF8, "application/json"),
    };

    /// <summary>Scrapes the router's /metrics over HTTP and parses it as the operator does; a missing series fails the test.</summary>
    private static async Task<RouterLoad> ReadAsync(RouterHost router)
    {
        string text = await router.Http.GetStringAsync("/metrics");
        var reading = PrometheusRouterLoadSource.Parse(text);
        Assert.True(reading.Load is not null, reading.Problem + "\n" + text);
        return reading.Load;
    }

    /// <summary>Polls the router's /metrics until <paramref name="condition"/> holds; a time-out names the worker engine's own view.</summary>
    private static async Task<RouterLoad> EventuallyAsync(RouterHost router, Func<RouterLoad, bool> condition, string what, Func<string> engineView)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var load = await ReadAsync(router);
            if (condition(load)) return load;
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what} in the router's /metrics (last: {load}; the engine: {engineView()})");
            await Task.Delay(50);
        }
    }
}
