// /metrics serves the engine metrics under vLLM's exact names (colons included) in one
// Prometheus text exposition with OpenTelemetry's, and the Generate
// span joins the caller's W3C trace (traceparent on the gRPC call).
using System.Diagnostics;
using Grpc.Core;
using V = Platform.Core.Telemetry.VllmMetricNames;

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
    public async Task Metrics_endpoint_serves_vllm_names_with_colons_and_sane_values_in_one_exposition()
    {
        await using var w = await WorkerUnderTest.StartAsync("--served-model-name", "tiny-metrics");
        var prompt = TestModel.Prompt(40, 9);
        await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 6));
        await w.GenerateAllAsync(WorkerUnderTest.Request(prompt, 6));  // prefix-cache hit on 2 blocks
        using var http = new HttpClient { BaseAddress = w.Worker.HttpAddress };
        string text = "";
        await Poll.UntilAsync(async () =>
        {
            text = await http.GetStringAsync("/metrics");
            return PrometheusText.Value(text, V.GenerationTokensTotal) >= 12 && PrometheusText.Value(text, V.E2eRequestLatencySeconds + "_count") >= 2;
        }, TimeSpan.FromSeconds(5), "generation tokens counted");

        Assert.Equal(12, PrometheusText.Value(text, V.GenerationTokensTotal));
        Assert.Equal(80, PrometheusText.Value(text, V.PromptTokensTotal));
        Assert.Equal(0, PrometheusText.Value(text, V.NumRequestsRunning));
        Assert.Equal(0, PrometheusText.Value(text, V.NumRequestsWaiting));
        Assert.Equal(0, PrometheusText.Value(text, V.KvCacheUsagePerc));
        Assert.True(PrometheusText.Value(text, V.PrefixCacheQueriesTotal) >= 64);
        Assert.Equal(32, PrometheusText.Value(text, V.PrefixCacheHitsTotal));
        Assert.Equal(0, PrometheusText.Value(text, V.NumPreemptionsTotal));
        Assert.Equal(2, PrometheusText.Value(text, V.TimeToFirstTokenSeconds + "_count"));
        Assert.True(PrometheusText.Value(text, V.TimeToFirstTokenSeconds + "_sum") > 0);
        Assert.Equal(10, PrometheusText.Value(text, V.InterTokenLatencySeconds + "_count"));
        Assert.Equal(2, PrometheusText.Value(text, V.E2eRequestLatencySeconds + "_count"));
        Assert.Equal(2, PrometheusText.Value(text, V.RequestQueueTimeSeconds + "_count"));
        Assert.Equal(2, PrometheusText.Value(text, V.RequestPrefillTimeSeconds + "_count"));
        Assert.True(PrometheusText.Value(text, V.RequestPrefillTimeSeconds + "_sum") > 0);
        Assert.Contains(V.RequestSuccessTotal + "{model_name=\"tiny-metrics\",finished_reason=\"length\"} 2", text, StringComparison.Ordinal);

        // Exact spelling, one family each, every sample labelled with the model, and no vllm_ left over.
        foreach (var name in V.All)
        {
            Assert.Single(text.Split('\n'), l => l.StartsWith("# TYPE " + name + " ", StringComparison.Ordinal));
            var samples = text.Split('\n').Where(l => l.StartsWith(name, StringComparison.Ordinal) && l.Length > name.Length && l[name.Length] is '{' or ' ' or '_').ToList();
            Assert.NotEmpty(samples);
            Assert.All(samples, l => Assert.Contains("model_name=\"tiny-metrics\"", l, StringComparison.Ordinal));
        }
        Assert.DoesNotContain("vllm_", text, StringComparison.Ordinal);
        PrometheusText.AssertOneExposition(text);
        // OpenTelemetry's part follows in the same answer (the worker's other gauges, ASP.NET Core, runtime).
        Assert.Contains("platform_worker_queued_prefill_tokens", text, StringComparison.Ordinal);
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
