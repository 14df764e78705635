// Tools through the router: a request's tools, documents and tool-call history reach the model's own
// chat template (here Qwen2.5's real template), the reply is read for calls in the format the router
// was told (--tool-call-parser hermes), and the official OpenAI .NET client sees tool calls and
// finish_reason tool_calls, streamed or not. The worker is scripted so the reply is a call on cue;
// everything else is the real router. Bad tool input is a 400 naming the field, with no worker call.
using System.ClientModel;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;
using Platform.Core.Protos;
using HfTokenizer = Platform.Core.Tokenization.HfTokenizer;

namespace Platform.Router.Tests;

public sealed class ToolCallRouterTests
{
    private static string QwenTemplate()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Platform.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "Platform.Core.Tests", "TestData", "chat_templates", "templates", "qwen2.5-7b-instruct.jinja");
    }

    /// <summary>The reply of a model that decided to call a tool, cut so the tag and the JSON straddle chunks.</summary>
    private static readonly string[] CallPieces =
        ["Let me look", " that up. ", "<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"];

    private static GenerateScript Replying(string[] pieces, List<GenerateRequest> seen) => async (request, stream, _, cancellationToken) =>
    {
        lock (seen) seen.Add(request);
        for (int i = 0; i < pieces.Length; i++)
        {
            await stream.WriteAsync(new GenerateChunk
            {
                TokenIds = { i + 1 },
                Text = pieces[i],
                PromptTokens = request.PromptTokenIds.Count,
                CompletionTokens = i + 1,
                FinishReason = i == pieces.Length - 1 ? FinishReason.Stop : FinishReason.Unspecified,
            }, cancellationToken);
        }
    };

    private static ChatTool Weather() => ChatTool.CreateFunctionTool("get_weather", "Get the current weather in a city.",
        BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""));

    [Fact]
    public async Task A_call_in_the_reply_reaches_the_openai_client_as_tool_calls_streamed_or_not()
    {
        var seen = new List<GenerateRequest>();
        await using var worker = await ScriptedWorker.StartAsync(Replying(CallPieces, seen));
        await using var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--chat-template", QwenTemplate(), "--tool-call-parser", "hermes");
        await router.WaitForWorkers(1);
        var client = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(router.Http.BaseAddress!, "/v1") });
        var options = new ChatCompletionOptions { Tools = { Weather() } };
        ChatMessage[] messages = [new UserChatMessage("What is the weather in Paris?")];

        ChatCompletion completion = await client.CompleteChatAsync(messages, options);
        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Paris", JsonDocument.Parse(call.FunctionArguments.ToString()).RootElement.GetProperty("city").GetString());
        Assert.StartsWith("chatcmpl-tool-", call.Id, StringComparison.Ordinal);
        Assert.Equal("Let me look that up. ", Assert.Single(completion.Content).Text);

        // The model saw the tool: Qwen's template lists it inside <tools> in the system turn.
        var tokenizer = HfTokenizer.Load(TestModels.TinyLlama);
        string prompt = tokenizer.Decode([.. seen[0].PromptTokenIds]);
        Assert.Contains("<tools>", prompt, StringComparison.Ordinal);
        Assert.Contains("\"name\": \"get_weather\"", prompt, StringComparison.Ordinal);

        var content = new System.Text.StringBuilder();
        var calls = new Dictionary<int, (string? Id, string? Name, System.Text.StringBuilder Args)>();
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options))
        {
            foreach (var part in update.ContentUpdate) content.Append(part.Text);
            foreach (var t in update.ToolCallUpdates)
            {
                if (!calls.TryGetValue(t.Index, out var c)) calls[t.Index] = c = (null, null, new System.Text.StringBuilder());
                calls[t.Index] = (t.ToolCallId ?? c.Id, t.FunctionName ?? c.Name, c.Args.Append(t.FunctionArgumentsUpdate?.ToString()));
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal("Let me look that up. ", content.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        var streamed = Assert.Single(calls).Value;
        Assert.Equal("get_weather", streamed.Name);
        Assert.StartsWith("chatcmpl-tool-", streamed.Id, StringComparison.Ordinal);
        Assert.Equal("Paris", JsonDocument.Parse(streamed.Args.ToString()).RootElement.GetProperty("city").GetString());
    }

    [Fact]
    public async Task Tool_history_and_documents_reach_the_template_and_a_prose_reply_stays_content()
    {
        var seen = new List<GenerateRequest>();
        await using var worker = await ScriptedWorker.StartAsync(Replying(["It is ", "22 degrees."], seen));
        await using var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--chat-template", QwenTemplate(), "--tool-call-parser", "hermes");
        await router.WaitForWorkers(1);

        var (status, body, _) = await router.PostAsync("/v1/chat/completions", """
            {"model":"tiny","max_tokens":8,
             "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
             "messages":[
               {"role":"user","content":"Weather in Paris?"},
               {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
               {"role":"tool","tool_call_id":"call_1","content":"22 degrees and sunny"}]}
            """);
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("It is 22 degrees.", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.False(choice.GetProperty("message").TryGetProperty("tool_calls", out _));

        // The call is rendered as Qwen writes it (arguments as an object, not a quoted string), and the result as a tool response.
        string prompt = HfTokenizer.Load(TestModels.TinyLlama).Decode([.. seen[0].PromptTokenIds]);
        Assert.Contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", prompt, StringComparison.Ordinal);
        Assert.Contains("<tool_response>\n22 degrees and sunny\n</tool_response>", prompt, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Tools_with_tool_choice_none_are_shown_to_the_model_without_a_parser_and_the_reply_is_text()
    {
        var seen = new List<GenerateRequest>();
        await using var worker = await ScriptedWorker.StartAsync(Replying(CallPieces, seen));
        await using var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--chat-template", QwenTemplate());
        await router.WaitForWorkers(1);

        var (status, body, _) = await router.PostAsync("/v1/chat/completions", """
            {"model":"tiny","max_tokens":8,"tool_choice":"none",
             "tools":[{"type":"function","function":{"name":"get_weather"}}],
             "messages":[{"role":"user","content":"Weather in Paris?"}]}
            """);
        Assert.Equal(200, status);
        Assert.Equal(string.Concat(CallPieces), body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Contains("get_weather", HfTokenizer.Load(TestModels.TinyLlama).Decode([.. seen[0].PromptTokenIds]), StringComparison.Ordinal);
    }

    public static TheoryData<string, string> BadToolInput() => new()
    {
        { """{"tools":{"type":"function"}}""", "tools" },
        { """{"tools":[{"type":"retrieval"}]}""", "tools[0].type" },
        { """{"tools":[{"type":"function","function":{"description":"no name"}}]}""", "tools[0].function.name" },
        { """{"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]}""", "tools[0].function.parameters" },
        { """{"tools":[{"type":"function","function":{"name":"f"}}]}""", "tool_choice" },   // auto by default, and this router has no parser
        { """{"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}""", "tool_choice" },
        { """{"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}""", "tool_choice" },
        { """{"tool_choice":"auto"}""", "tool_choice" },
        { """{"tool_choice":"sometimes","tools":[{"type":"function","function":{"name":"f"}}]}""", "tool_choice" },
        { """{"parallel_tool_calls":"yes"}""", "parallel_tool_calls" },
        { """{"documents":"a text"}""", "documents" },
        { """{"chat_template_kwargs":{"messages":[]}}""", "chat_template_kwargs.messages" },
        { """{"chat_template_kwargs":[1]}""", "chat_template_kwargs" },
    };

    [Theory]
    [MemberData(nameof(BadToolInput))]
    public async Task Bad_tool_input_is_a_400_naming_the_field_without_worker_calls(string fields, string param)
    {
        await using var worker = await ScriptedWorker.StartAsync((request, stream, _, _) => ScriptedWorker.TokensAsync(request, stream, 2));
        await using var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--chat-template", QwenTemplate());
        await router.WaitForWorkers(1);
        string json = """{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}],""" + fields[1..];
        var (status, body, _) = await router.PostAsync("/v1/chat/completions", json);
        Assert.Equal(400, status);
        ErrorShape.Assert(body, param);
        Assert.Equal(0, worker.GenerateCalls);
    }

    [Theory]
    [InlineData("""[{"role":"user","content":"hi"},{"role":"tool","content":"22"}]""", "messages[1].tool_call_id")]
    [InlineData("""[{"role":"user","content":"hi","tool_calls":[]}]""", "messages[0].tool_calls")]
    [InlineData("""[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"arguments":"{}"}}]}]""", "messages[0].tool_calls[0].function.name")]
    [InlineData("""[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":7}}]}]""", "messages[0].tool_calls[0].function.arguments")]
    [InlineData("""[{"role":"function","content":"x"}]""", "messages[0].role")]
    public async Task Bad_tool_messages_are_400s_naming_the_message(string messages, string param)
    {
        await using var worker = await ScriptedWorker.StartAsync((request, stream, _, _) => ScriptedWorker.TokensAsync(request, stream, 2));
        await using var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--chat-template", QwenTemplate(), "--tool-call-parser", "hermes");
        await router.WaitForWorkers(1);
        var (status, body, _) = await router.PostAsync("/v1/chat/completions", $$"""{"model":"tiny","max_tokens":2,"messages":{{messages}}}""");
        Assert.Equal(400, status);
        ErrorShape.Assert(body, param);
        Assert.Equal(0, worker.GenerateCalls);
    }

    [Fact]
    public void An_unknown_parser_or_auto_tool_choice_without_a_parser_stops_the_router_with_the_names_it_accepts()
    {
        var unknown = Assert.Throws<RouterConfigurationException>(() =>
            RouterApp.Build(["--model", TestModels.TinyLlama, "--workers", "http://127.0.0.1:1", "--tool-call-parser", "qwen"]));
        Assert.Contains("hermes, llama3_json", unknown.Message, StringComparison.Ordinal);
        var flagOnly = Assert.Throws<RouterConfigurationException>(() =>
            RouterApp.Build(["--model", TestModels.TinyLlama, "--workers", "http://127.0.0.1:1", "--enable-auto-tool-choice"]));
        Assert.Contains("--tool-call-parser", flagOnly.Message, StringComparison.Ordinal);
    }
}
