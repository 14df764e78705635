// A worker that aborts a generation (FINISH_REASON_ABORT: here the real worker host,
// InProcessWorker, whose drain grace period runs out under a slow engine) must never
// look like a complete answer: a stream that already carried tokens ends with an SSE
// error event (code "aborted", no chunk with a finish_reason), and a non-streamed
// request gets a retriable 503 with Retry-After.
using System.Net;
using System.Text;
using System.Text.Json;

namespace Platform.Router.Tests;

public sealed class AbortTests
{
    private static async Task<(InProcessWorker Worker, RouterHost Router)> StartAsync(int stepMs = 50)
    {
        var worker = await InProcessWorker.StartAsync(TestModels.TinyLlama,
            ["--served-model-name", "tiny", "--drain-grace-seconds", "1", "--kv-blocks", "64", "--threads", "1"]);
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address]);
        await router.WaitForWorkers(1);
        // 50 ms a step: the 500 tokens asked for need 25 s, far past the 1 s drain grace.
        worker.Engine.BeforeStep = () => Thread.Sleep(stepMs);
        return (worker, router);
    }

    private static StringContent Body(bool stream) => new(
        $$"""{"model":"tiny","prompt":"tell me everything","max_tokens":500,"ignore_eos":true,"stream":{{(stream ? "true" : "false")}}}""",
        Encoding.UTF8, "application/json");

    [Fact]
    public async Task An_abort_after_tokens_ends_the_stream_with_an_error_event_not_a_stop()
    {
        var (worker, router) = await StartAsync();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Body(stream: true) };
            using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync(), StringComparison.Ordinal);

            var stopping = worker.StopAsync(); // SIGTERM: drain, 1 s grace, then the stream is aborted
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var events = (await reader.ReadToEndAsync(cts.Token)).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            await stopping;

            Assert.Equal("data: [DONE]", events[^1].Trim());
            var error = JsonDocument.Parse(events[^2].Trim()[6..]).RootElement;
            ErrorShape.Assert(error, code: "aborted");
            Assert.Contains("drain grace period", error.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
            foreach (var e in events[..^2])
            {
                var choice = JsonDocument.Parse(e.Trim()[6..]).RootElement.GetProperty("choices")[0];
                Assert.Equal(JsonValueKind.Null, choice.GetProperty("finish_reason").ValueKind);
            }
        }
        finally
        {
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_abort_of_a_non_streamed_request_is_a_retriable_503()
    {
        var (worker, router) = await StartAsync();
        try
        {
            using var body = Body(stream: false);
            var answer = router.Http.PostAsync("/v1/completions", body);
            await RouterHost.Eventually(() => worker.Engine.GetStats().Running == 1, "the request runs on the worker");
            await Task.Delay(300); // some tokens generated
            var stopping = worker.StopAsync();
            using var response = await answer;
            await stopping;

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("1", response.Headers.RetryAfter?.ToString());
            ErrorShape.Assert(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement, code: "aborted");
        }
        finally
        {
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_abort_before_the_first_token_is_retried_and_without_another_worker_is_a_503()
    {
        // 3 s before the first step's token, 1 s of drain grace: the abort is the stream's first chunk.
        var (worker, router) = await StartAsync(stepMs: 3000);
        // A step runs only when the engine has work: the first one to start holds this request (a fixed delay here
        // raced the request's way through the router on a loaded machine, and the stop came first).
        var stepStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sleep = worker.Engine.BeforeStep;
        worker.Engine.BeforeStep = () =>
        {
            stepStarted.TrySetResult();
            sleep?.Invoke();
        };
        try
        {
            using var body = Body(stream: true);
            var answer = router.Http.PostAsync("/v1/completions", body);
            await stepStarted.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the request is on the worker, its first step sleeping
            var stopping = worker.StopAsync();
            using var response = await answer;
            await stopping;

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("1", response.Headers.RetryAfter?.ToString());
            ErrorShape.Assert(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement, code: "aborted");
        }
        finally
        {
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }
}
