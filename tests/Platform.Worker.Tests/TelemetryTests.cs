// /metrics serves the engine metrics under vLLM-like names, and the Generate
// span joins the caller's W3C trace (traceparent on the gRPC call).
using System.Diagnostics;
using Grpc.Core;

namespace Platform.Worker.Tests;

/// <summary>
/// Not in parallel with other tests: OpenTelemetry subscribes to meters by name, so an in-process
/// worker's /metrics would also count the requests of workers that other tests run at the same time.
/// </summary>
[CollectionDefinition(nameof(TelemetryTests), DisableParallelization = true)]
public sealed class TelemetryCollection;

[Collection(nameof(TelemetryTests))]
public sealed class TelemetryTests
{
    [Fact]
    public async Task Metrics_endpoint_serves_engine_gauges_counters_and_latency_histograms()
    {
        await using var w = await WorkerUnderTest.StartAsync("--served-model-name", "tiny-metrics");
        var prompt = TestModel.Prompt(40, 9);
        await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 6));
        await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 6));  // prefix-cache hit on 2 blocks
        using var http = new HttpClient { BaseAddress = w.Worker.HttpAddress };
        string text = "";
        // The exporter caches a scrape for a moment; poll until the second request is in.
        await Poll.UntilAsync(async () =>
        {
            text = await http.GetStringAsync("/metrics");
            return Value(text, "vllm_generation_tokens_total") >= 12;
        }, TimeSpan.FromSeconds(5), "generation tokens counted");

        Assert.Equal(12, Value(text, "vllm_generation_tokens_total"));
        Assert.Equal(80, Value(text, "vllm_prompt_tokens_total"));
        Assert.Equal(0, Value(text, "vllm_num_requests_running"));
        Assert.Equal(0, Value(text, "vllm_num_requests_waiting"));
        Assert.Equal(0, Value(text, "vllm_kv_cache_usage_perc"));
        Assert.True(Value(text, "vllm_prefix_cache_queries_total") >= 64);
        Assert.Equal(32, Value(text, "vllm_prefix_cache_hits_total"));
        Assert.Equal(2, Value(text, "vllm_time_to_first_token_seconds_count"));
        Assert.Equal(10, Value(text, "vllm_inter_token_latency_seconds_count"));
        Assert.Equal(2, Value(text, "vllm_e2e_request_latency_seconds_count"));
        Assert.Contains("model_name=\"tiny-metrics\"", text);
        Assert.Contains("finished_reason=\"length\"", text);
    }

    /// <summary>The value of the first sample of <paramref name="name"/> (any labels).</summary>
    private static double Value(string exposition, string name)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal) || line.Length == name.Length || (line[name.Length] != '{' && line[name.Length] != ' ')) continue;
            return double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }
        return double.NaN;
    }

    [Fact]
    public async Task Generate_span_continues_the_callers_trace()
    {
        var traceId = ActivityTraceId.CreateRandom();
        var parentSpan = ActivitySpanId.CreateRandom();
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == WorkerTelemetry.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                if (a.TraceId == traceId) lock (spans) spans.Add(a);
            },
        };
        ActivitySource.AddActivityListener(listener);

        await using var w = await WorkerUnderTest.StartAsync();
        var headers = new Metadata { { "traceparent", $"00-{traceId}-{parentSpan}-01" } };
        using (var call = w.Client.Generate(WorkerUnderTest.Request(TestModel.Prompt(10, 2), 3), headers))
            await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }

        await Poll.UntilAsync(() => { lock (spans) return Task.FromResult(spans.Count > 0); }, TimeSpan.FromSeconds(5), "the generate span ended");
        Activity span;
        lock (spans) span = Assert.Single(spans);
        Assert.Equal("generate", span.OperationName);
        Assert.Equal(traceId, span.TraceId);
        Assert.NotEqual(default, span.ParentSpanId);
        Assert.Equal(3, span.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal("length", span.GetTagItem("gen_ai.response.finish_reasons"));
    }
}
