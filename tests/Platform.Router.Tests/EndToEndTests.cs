// End to end over real processes on loopback: two platform-worker processes
// with the tiny random model, the platform-router process in front, and the
// official OpenAI .NET client talking to the router.
using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;

namespace Platform.Router.Tests;

public sealed class ProcessClusterFixture : IAsyncLifetime
{
    internal WorkerProcess[] Workers { get; private set; } = [];
    internal RouterProcess Router { get; private set; } = null!;
    internal string ModelDir { get; } = TestModels.TinyLlama;

    internal static string[] WorkerArgs(string modelDir, int port = 0, int kvBlocks = 128) =>
        ["--model", modelDir, "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--http-port", "0",
         "--kv-blocks", kvBlocks.ToString(System.Globalization.CultureInfo.InvariantCulture), "--threads", "1", "--served-model-name", "tiny",
         "--drain-grace-seconds", "2"];

    public async Task InitializeAsync()
    {
        var starts = new[] { WorkerProcess.StartAsync(WorkerArgs(ModelDir)), WorkerProcess.StartAsync(WorkerArgs(ModelDir)) };
        Workers = await Task.WhenAll(starts);
        Router = await RouterProcess.StartAsync(["--model", ModelDir, "--workers", string.Join(",", Workers.Select(w => w.GrpcAddress.ToString().TrimEnd('/'))),
            "--port", "0", "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10"]);
        using var http = new HttpClient { BaseAddress = Router.Address };
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await http.GetAsync("/readyz")).StatusCode != System.Net.HttpStatusCode.OK)
        {
            if (DateTime.UtcNow > deadline) throw new InvalidOperationException("router never became ready:\n" + Router.OutputTail);
            await Task.Delay(100);
        }
        // Both workers, not just the first: wait until each has served a request routed to it.
        await Task.Delay(600);
    }

    public async Task DisposeAsync()
    {
        await Router.DisposeAsync();
        foreach (var w in Workers) await w.DisposeAsync();
    }

    internal OpenAIClientOptions Options() => new() { Endpoint = new Uri(Router.Address, "/v1"), NetworkTimeout = TimeSpan.FromSeconds(60) };

    internal OpenAIClient Client() => new(new ApiKeyCredential("unused"), Options());
}

[CollectionDefinition("process-cluster")]
public sealed class ProcessClusterCollection : ICollectionFixture<ProcessClusterFixture>;

[Collection("process-cluster")]
public sealed class EndToEndTests(ProcessClusterFixture f)
{
    [Fact]
    public async Task OpenAI_client_chat_non_streaming_and_streaming()
    {
        var chat = f.Client().GetChatClient("tiny");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Hello, who are you?")], options);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.True(completion.Usage.OutputTokenCount is > 0 and <= 8);
        Assert.True(completion.Usage.InputTokenCount > 5);
        Assert.NotNull(completion.Usage.InputTokenDetails);

        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Hello, who are you?")], options))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        Assert.NotNull(finish);
        Assert.NotNull(usage);
        Assert.Equal(completion.Usage.OutputTokenCount, usage!.OutputTokenCount);
        // Greedy decoding on the same model: streaming and non-streaming agree.
        Assert.Equal(completion.Content[0].Text, text.ToString());
    }

    [Fact]
    public async Task OpenAI_client_completions_non_streaming_and_streaming()
    {
        // OpenAI .NET 2.15 keeps its legacy completions client internal, so completions go through the
        // client's own pipeline (its auth, retry and transport) with a hand-written body.
        var pipeline = f.Client().Pipeline;
        async Task<PipelineResponse> Send(string json, bool buffer)
        {
            var message = pipeline.CreateMessage();
            message.Request.Method = "POST";
            message.Request.Uri = new Uri(f.Router.Address, "/v1/completions");
            message.Request.Headers.Set("Content-Type", "application/json");
            message.Request.Content = BinaryContent.Create(BinaryData.FromString(json));
            message.BufferResponse = buffer;
            await pipeline.SendAsync(message);
            return message.ExtractResponse()!;
        }

        string body = """{"model":"tiny","prompt":"Once upon a time","max_tokens":6,"temperature":0,"ignore_eos":true}""";
        using var result = await Send(body, buffer: true);
        Assert.Equal(200, result.Status);
        using var doc = JsonDocument.Parse(result.Content.ToString());
        Assert.Equal(6, doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        string full = doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;

        using var streamed = await Send(body.Replace("\"ignore_eos\":true", "\"ignore_eos\":true,\"stream\":true", StringComparison.Ordinal), buffer: false);
        using var reader = new StreamReader(streamed.ContentStream!);
        string sse = await reader.ReadToEndAsync();
        var events = sse.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        string text = string.Concat(events[..^1].Select(e => JsonDocument.Parse(e[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()));
        Assert.Equal(full, text);
    }

    [Fact]
    public async Task Over_processes_chat_logprobs_reach_the_openai_client_and_n_choices_come_back_indexed()
    {
        var chat = f.Client().GetChatClient("tiny");
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Hello there")],
            new ChatCompletionOptions { MaxOutputTokenCount = 5, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 });
        Assert.Equal(completion.Usage.OutputTokenCount, completion.ContentTokenLogProbabilities.Count);
        Assert.All(completion.ContentTokenLogProbabilities, t =>
        {
            Assert.Equal(2, t.TopLogProbabilities.Count);
            Assert.Equal(t.Token, t.TopLogProbabilities[0].Token);
        });

        using var http = new HttpClient { BaseAddress = f.Router.Address };
        using var content = new StringContent(
            """{"model":"tiny","prompt":"Once upon a time","max_tokens":6,"temperature":1,"seed":11,"ignore_eos":true,"n":3}""", Encoding.UTF8, "application/json");
        using var response = await http.PostAsync("/v1/completions", content);
        Assert.Equal(200, (int)response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var choices = doc.RootElement.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal(18, doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task OpenAI_client_sees_router_errors_with_their_status()
    {
        var chat = f.Client().GetChatClient("no-such-model");
        var e = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, e.Status);
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Shared_prefix_lands_on_the_worker_holding_it_with_cached_tokens()
    {
        using var http = new HttpClient { BaseAddress = f.Router.Address };
        string system = string.Join(' ', Enumerable.Range(0, 100).Select(i => $"rule{i * 31 % 997}"));
        async Task<(string Worker, int Cached, int Prompt)> Ask(string q)
        {
            using var response = await http.PostAsJsonAsync("/v1/completions", new { model = "tiny", prompt = system + " " + q, max_tokens = 2, temperature = 0 });
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
            var usage = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("usage");
            return (response.Headers.GetValues("x-platform-worker").Single(), usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32(),
                usage.GetProperty("prompt_tokens").GetInt32());
        }

        var first = await Ask("first");
        await Task.Delay(500); // the worker's KV events reach the router's index
        var second = await Ask("second");
        Assert.Equal(first.Worker, second.Worker);
        Assert.True(second.Cached >= first.Prompt - 32, $"cached {second.Cached} of {second.Prompt}");
    }
}
