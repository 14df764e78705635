// Request migration over real workers (the in-process worker host with the real
// engine; faults injected in front of its gRPC service): a worker that fails
// mid-stream is replaced, and the client's text is the undisturbed run's, token
// for token: greedy and seeded sampling, streaming and not, completions and
// chat, through two failures over three workers. With migration off the client
// gets the clean error of before.
using System.Net;
using System.Text;
using System.Text.Json;

namespace Platform.Router.Tests;

[Collection(nameof(KeepAliveTests))]
public sealed class MigrationTests
{
    private static string Model => TestModels.TinyLlama;

    private static string Body(bool chat, bool stream, double temperature)
    {
        var body = new Dictionary<string, object>
        {
            ["model"] = "tiny", ["max_tokens"] = 48, ["ignore_eos"] = true, ["stream"] = stream, ["temperature"] = temperature, ["seed"] = 1234,
        };
        if (chat) body["messages"] = new[] { new { role = "user", content = "tell me a long story about the sea" } };
        else body["prompt"] = "tell me a long story about the sea";
        if (stream) body["stream_options"] = new { include_usage = true };
        return JsonSerializer.Serialize(body);
    }

    /// <summary>The text (and usage) the client saw; an error event fails the test.</summary>
    private static async Task<(string Text, int CompletionTokens, int PromptTokens)> AskAsync(RouterHost router, bool chat, bool stream, double temperature)
    {
        string path = chat ? "/v1/chat/completions" : "/v1/completions";
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(Body(chat, stream, temperature), Encoding.UTF8, "application/json") };
        using var response = await router.Http.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        if (!stream)
        {
            var json = JsonDocument.Parse(body).RootElement;
            var choice = json.GetProperty("choices")[0];
            string text = chat ? choice.GetProperty("message").GetProperty("content").GetString()! : choice.GetProperty("text").GetString()!;
            var usage = json.GetProperty("usage");
            return (text, usage.GetProperty("completion_tokens").GetInt32(), usage.GetProperty("prompt_tokens").GetInt32());
        }
        var sb = new StringBuilder();
        int completion = -1, prompt = -1;
        foreach (var line in body.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)))
        {
            var json = JsonDocument.Parse(line[6..]).RootElement;
            Assert.False(json.TryGetProperty("error", out _), "the stream ended with an error: " + line);
            if (json.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
            {
                completion = usage.GetProperty("completion_tokens").GetInt32();
                prompt = usage.GetProperty("prompt_tokens").GetInt32();
            }
            var choices = json.GetProperty("choices");
            if (choices.GetArrayLength() == 0) continue;
            var c = choices[0];
            sb.Append(chat ? (c.GetProperty("delta").TryGetProperty("content", out var d) ? d.GetString() : "") : c.GetProperty("text").GetString());
        }
        Assert.EndsWith("data: [DONE]", body.TrimEnd(), StringComparison.Ordinal);
        return (sb.ToString(), completion, prompt);
    }

    public static TheoryData<bool, bool, double> Cases()
    {
        var data = new TheoryData<bool, bool, double>();
        foreach (bool chat in new[] { false, true })
            foreach (bool stream in new[] { false, true })
                foreach (double temperature in new[] { 0.0, 0.9 })
                    data.Add(chat, stream, temperature);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Two_workers_failing_mid_stream_leave_the_client_with_the_undisturbed_text(bool chat, bool stream, double temperature)
    {
        var workers = await Task.WhenAll(TestWorkers.StartAsync(Model), TestWorkers.StartAsync(Model), TestWorkers.StartAsync(Model));
        var router = await RouterHost.StartAsync(Model, workers.Select(w => w.Address));
        try
        {
            await router.WaitForWorkers(3);
            var reference = await AskAsync(router, chat, stream, temperature);

            // The first two Generate calls anywhere fail after some chunks (worker i after 6 + 5i): the request moves
            // twice, and the third worker finishes it.
            var budget = new FailureBudget(2);
            foreach (var (w, i) in workers.Select((w, i) => (w, i)))
            {
                w.Faults.FailAfterChunks = 6 + 5 * i;
                w.Faults.FailureBudget = budget;
            }
            int callsBefore = workers.Sum(w => w.Faults.GenerateCalls);
            var disturbed = await AskAsync(router, chat, stream, temperature);
            Assert.Equal(0, budget.Remaining);
            Assert.Equal(3, workers.Sum(w => w.Faults.GenerateCalls) - callsBefore);
            Assert.Equal(reference.Text, disturbed.Text);
            Assert.Equal(48, disturbed.CompletionTokens);
            Assert.Equal(reference.PromptTokens, disturbed.PromptTokens);
        }
        finally
        {
            await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }

    [Fact]
    public async Task With_migration_off_a_mid_stream_failure_ends_the_stream_with_an_error_event()
    {
        var workers = await Task.WhenAll(TestWorkers.StartAsync(Model), TestWorkers.StartAsync(Model));
        var router = await RouterHost.StartAsync(Model, workers.Select(w => w.Address), "--migration-limit", "0");
        try
        {
            await router.WaitForWorkers(2);
            foreach (var w in workers) w.Faults.FailAfterChunks = 4;
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(Body(false, true, 0), Encoding.UTF8, "application/json") };
            using var response = await router.Http.SendAsync(request);
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            ErrorShape.Assert(JsonDocument.Parse(events[^2][6..]).RootElement);
            Assert.Equal(1, workers.Sum(w => w.Faults.GenerateCalls));
        }
        finally
        {
            await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}
