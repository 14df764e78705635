// A streamed request that waits long for its first token (queued, or a long prefill) receives SSE
// comment lines at the keep-alive interval, so proxies with read timeouts keep the connection; the
// official OpenAI client reads such a stream unchanged. A request that fails before the first
// comment still gets its HTTP status.
using System.Text;
using OpenAI;
using OpenAI.Chat;

namespace Platform.Router.Tests;

[Collection(nameof(KeepAliveTests))]
[CollectionDefinition(nameof(KeepAliveTests), DisableParallelization = true)]
public sealed class KeepAliveTests
{
    [Fact]
    public async Task A_slow_first_token_gets_comment_lines_and_the_stream_then_completes()
    {
        var worker = await TestWorkers.StartAsync(TestModels.TinyLlama, kvBlocks: 64);
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--Router:KeepAliveIntervalMs", "200");
        using var gate = new ManualResetEventSlim(false);
        try
        {
            await router.WaitForWorkers(1);
            // The engine takes no step until the gate opens: the first token is 1.5 s away.
            worker.Engine.BeforeStep = () => gate.Wait();
            _ = Task.Delay(1500).ContinueWith(_ => gate.Set(), TaskScheduler.Default);
            var body = System.Text.Json.JsonSerializer.Serialize(new { model = "tiny", prompt = "hello there", max_tokens = 4, stream = true, ignore_eos = true });
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(200, (int)response.StatusCode);
            var lines = new List<string>();
            using (var reader = new StreamReader(await response.Content.ReadAsStreamAsync()))
                while (await reader.ReadLineAsync() is { } line) if (line.Length > 0) lines.Add(line);
            int firstData = lines.FindIndex(l => l.StartsWith("data: ", StringComparison.Ordinal));
            int comments = lines.Take(firstData).Count(l => l.StartsWith(": ", StringComparison.Ordinal));
            Assert.True(comments >= 3, $"{comments} keep-alive comments before the first token:\n{string.Join('\n', lines)}");
            Assert.Equal("data: [DONE]", lines[^1]);
            Assert.Contains(lines, l => l.StartsWith("data: {", StringComparison.Ordinal) && l.Contains("\"finish_reason\":\"length\"", StringComparison.Ordinal));

            // The official client skips the comments and sees the same completion.
            gate.Reset();
            _ = Task.Delay(800).ContinueWith(_ => gate.Set(), TaskScheduler.Default);
            var chat = new ChatClient("tiny", new System.ClientModel.ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(router.Http.BaseAddress!, "/v1") });
            var text = new StringBuilder();
            ChatFinishReason? finish = null;
            await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("hello there")], new ChatCompletionOptions { MaxOutputTokenCount = 4 }))
            {
                foreach (var part in update.ContentUpdate) text.Append(part.Text);
                finish ??= update.FinishReason;
            }
            Assert.NotNull(finish);
            Assert.True(text.Length > 0, "the client saw no text");
        }
        finally
        {
            gate.Set();
            worker.Engine.BeforeStep = null;
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }
}
