// logprobs / top_logprobs and n > 1 through the real router and in-process engine workers.
// Log-probabilities: the completions shape (tokens, token_logprobs, top_logprobs maps, text_offset) and
// the chat shape read by the official OpenAI .NET client (ContentTokenLogProbabilities), streamed and
// not, with the same values both ways; greedy tokens are the most likely of their top list. A request
// migrated mid-stream gets the same log-probabilities as an undisturbed one. n > 1: choices indexed
// 0..n-1, child i seeded with seed + i exactly as a single request with that seed (vLLM's rule), so a
// seeded request is reproducible and its choices differ at temperature 1; greedy choices are equal;
// usage counts the prompt once; streamed chunks carry their choice's index; one failed child fails the
// request and stops its siblings. Bad values are 400s naming the field, with no worker call.
using System.ClientModel;
using System.Text;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;

namespace Platform.Router.Tests;

[Collection("two-workers")]
public sealed class LogprobsAndChoicesTests(TwoWorkerFixture f)
{
    private static async Task<List<JsonElement>> StreamAsync(RouterHost router, string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)response.StatusCode);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        return events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
    }

    private static List<string> Strings(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToList();
    private static List<double> Numbers(JsonElement array) => array.EnumerateArray().Select(e => e.GetDouble()).ToList();

    [Fact]
    public async Task Completion_logprobs_have_openais_legacy_shape_and_a_stream_carries_the_same_values()
    {
        const string json = """{"model":"tiny","prompt":"the sea is","max_tokens":6,"temperature":0,"ignore_eos":true,"logprobs":3}""";
        var (status, body, _) = await f.KvAware.PostAsync("/v1/completions", json);
        Assert.True(status == 200, body.ToString());
        var choice = body.GetProperty("choices")[0];
        var logprobs = choice.GetProperty("logprobs");
        var tokens = Strings(logprobs.GetProperty("tokens"));
        var tokenLogprobs = Numbers(logprobs.GetProperty("token_logprobs"));
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(e => e.GetInt32()).ToList();
        var tops = logprobs.GetProperty("top_logprobs").EnumerateArray().ToList();
        Assert.Equal(6, tokens.Count);
        Assert.Equal(6, tokenLogprobs.Count);
        Assert.Equal(6, tops.Count);
        Assert.Equal(0, offsets[0]);
        for (int i = 0; i < 6; i++)
        {
            Assert.True(tokenLogprobs[i] <= 0);
            var top = tops[i].EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
            // The sampled token and the 3 most likely (greedy: the sampled one is among them, so 3 entries).
            Assert.Equal(3, top.Count);
            Assert.Equal(tokenLogprobs[i], top[tokens[i]], 5);
            Assert.Equal(top.Values.Max(), tokenLogprobs[i], 5);
            if (i > 0) Assert.Equal(offsets[i - 1] + tokens[i - 1].EnumerateRunes().Count(), offsets[i]);
        }
        if (!tokens.Any(t => t.StartsWith("bytes:", StringComparison.Ordinal)))
            Assert.Equal(choice.GetProperty("text").GetString(), string.Concat(tokens));

        var chunks = await StreamAsync(f.KvAware, "/v1/completions", json.Replace("}", ",\"stream\":true}", StringComparison.Ordinal));
        var streamed = chunks.Select(c => c.GetProperty("choices")[0].GetProperty("logprobs")).Where(l => l.ValueKind == JsonValueKind.Object).ToList();
        Assert.Equal(tokens, streamed.SelectMany(l => Strings(l.GetProperty("tokens"))));
        var streamedLogprobs = streamed.SelectMany(l => Numbers(l.GetProperty("token_logprobs"))).ToList();
        Assert.Equal(tokenLogprobs.Count, streamedLogprobs.Count);
        for (int i = 0; i < tokenLogprobs.Count; i++) Assert.Equal(tokenLogprobs[i], streamedLogprobs[i], 4);
        Assert.Equal(offsets, streamed.SelectMany(l => l.GetProperty("text_offset").EnumerateArray().Select(e => e.GetInt32())));
    }

    [Fact]
    public async Task Completion_logprobs_0_give_only_the_sampled_token_and_no_logprobs_give_null()
    {
        var (_, body, _) = await f.KvAware.PostAsync("/v1/completions", """{"model":"tiny","prompt":"x","max_tokens":3,"temperature":1,"seed":4,"ignore_eos":true,"logprobs":0}""");
        var logprobs = body.GetProperty("choices")[0].GetProperty("logprobs");
        Assert.All(logprobs.GetProperty("top_logprobs").EnumerateArray(), t => Assert.Single(t.EnumerateObject()));
        var (_, plain, _) = await f.KvAware.PostAsync("/v1/completions", """{"model":"tiny","prompt":"x","max_tokens":3,"ignore_eos":true}""");
        Assert.Equal(JsonValueKind.Null, plain.GetProperty("choices")[0].GetProperty("logprobs").ValueKind);
    }

    [Fact]
    public async Task Chat_logprobs_read_by_the_openai_client_streamed_and_not()
    {
        var chat = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(f.KvAware.Http.BaseAddress!, "/v1") });
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 6, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 4 };
        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("tell me about the sea")], options);
        var content = completion.ContentTokenLogProbabilities;
        Assert.Equal(completion.Usage.OutputTokenCount, content.Count);
        Assert.NotEmpty(content);
        foreach (var token in content)
        {
            Assert.True(token.LogProbability <= 0);
            Assert.Equal(4, token.TopLogProbabilities.Count);
            var values = token.TopLogProbabilities.Select(t => t.LogProbability).ToList();
            Assert.Equal(values.OrderByDescending(v => v), values);
            // Greedy: the sampled token is the most likely one.
            Assert.Equal(token.Token, token.TopLogProbabilities[0].Token);
            Assert.Equal(token.LogProbability, token.TopLogProbabilities[0].LogProbability, 5);
            Assert.Equal(token.Utf8Bytes?.ToArray(), token.TopLogProbabilities[0].Utf8Bytes?.ToArray());
            if (!token.Token.StartsWith("bytes:", StringComparison.Ordinal))
                Assert.Equal(token.Token, Encoding.UTF8.GetString(token.Utf8Bytes?.ToArray() ?? []));
        }

        var streamed = new List<ChatTokenLogProbabilityDetails>();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("tell me about the sea")], options))
            streamed.AddRange(update.ContentTokenLogProbabilities);
        // Same tokens; the values agree to float rounding (the second run may find the prompt in the prefix cache).
        Assert.Equal(content.Select(t => t.Token), streamed.Select(t => t.Token));
        for (int i = 0; i < content.Count; i++) Assert.Equal(content[i].LogProbability, streamed[i].LogProbability, 4);
        Assert.Equal(content.Select(t => t.TopLogProbabilities.Count), streamed.Select(t => t.TopLogProbabilities.Count));

        // logprobs true alone: the sampled tokens, no alternatives.
        ChatCompletion bare = await chat.CompleteChatAsync([new UserChatMessage("tell me about the sea")],
            new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0, IncludeLogProbabilities = true });
        Assert.All(bare.ContentTokenLogProbabilities, t => Assert.Empty(t.TopLogProbabilities));
    }

    [Theory]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"logprobs\":21}", "logprobs")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"logprobs\":-1}", "logprobs")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"logprobs\":true}", "logprobs")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":0}", "n")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":17}", "n")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":1.5}", "n")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"best_of\":2}", "best_of")]
    [InlineData("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":2,\"best_of\":3}", "best_of")]
    [InlineData("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs")]
    [InlineData("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":false,\"top_logprobs\":0}", "top_logprobs")]
    [InlineData("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs")]
    [InlineData("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", "logprobs")]
    [InlineData("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":100}", "n")]
    public async Task Bad_logprobs_and_n_values_are_400s_naming_the_field_without_worker_calls(string path, string json, string param)
    {
        int before = f.GenerateCalls;
        var (status, body, _) = await f.KvAware.PostAsync(path, json);
        Assert.Equal(400, status);
        ErrorShape.Assert(body, param);
        Assert.Equal(before, f.GenerateCalls);
    }

    private async Task<List<string>> ChoicesAsync(string json)
    {
        var (status, body, _) = await f.KvAware.PostAsync("/v1/completions", json);
        Assert.True(status == 200, body.ToString());
        var choices = body.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal(Enumerable.Range(0, choices.Count), choices.Select(c => c.GetProperty("index").GetInt32()));
        return choices.Select(c => c.GetProperty("text").GetString()!).ToList();
    }

    [Fact]
    public async Task Seeded_n_choices_are_reproducible_differ_from_each_other_and_child_i_uses_seed_plus_i()
    {
        const string json = """{"model":"tiny","prompt":"once upon a time","max_tokens":10,"temperature":1,"seed":77,"ignore_eos":true,"n":3}""";
        int before = f.GenerateCalls;
        var first = await ChoicesAsync(json);
        Assert.Equal(3, f.GenerateCalls - before);
        var second = await ChoicesAsync(json);
        Assert.Equal(first, second);
        Assert.Equal(3, first.Distinct().Count());
        for (int i = 0; i < 3; i++)
        {
            var single = await ChoicesAsync($$"""{"model":"tiny","prompt":"once upon a time","max_tokens":10,"temperature":1,"seed":{{77 + i}},"ignore_eos":true}""");
            Assert.Equal(first[i], Assert.Single(single));
        }
    }

    [Fact]
    public async Task Greedy_n_choices_are_equal_and_usage_counts_the_prompt_once()
    {
        var (status, body, _) = await f.KvAware.PostAsync("/v1/completions",
            """{"model":"tiny","prompt":"once upon a time","max_tokens":5,"temperature":0,"ignore_eos":true,"n":4,"best_of":4}""");
        Assert.True(status == 200, body.ToString());
        var texts = body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("text").GetString()).ToList();
        Assert.Equal(4, texts.Count);
        Assert.Single(texts.Distinct());
        var (_, one, _) = await f.KvAware.PostAsync("/v1/completions", """{"model":"tiny","prompt":"once upon a time","max_tokens":5,"temperature":0,"ignore_eos":true}""");
        var usage = body.GetProperty("usage");
        Assert.Equal(one.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(20, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 20, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task Streamed_n_choices_carry_their_index_and_match_the_non_streamed_ones()
    {
        const string json = """{"model":"tiny","prompt":"the wind","max_tokens":8,"temperature":1,"seed":5,"ignore_eos":true,"n":3,"logprobs":2}""";
        var expected = await ChoicesAsync(json);
        var chunks = await StreamAsync(f.KvAware, "/v1/completions", json.Replace("}", ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", StringComparison.Ordinal));
        var usage = chunks[^1];
        Assert.Equal(0, usage.GetProperty("choices").GetArrayLength());
        Assert.Equal(24, usage.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var parts = chunks[..^1].Select(c => Assert.Single(c.GetProperty("choices").EnumerateArray())).ToList();
        for (int i = 0; i < 3; i++)
        {
            var mine = parts.Where(p => p.GetProperty("index").GetInt32() == i).ToList();
            Assert.Equal(expected[i], string.Concat(mine.Select(p => p.GetProperty("text").GetString())));
            Assert.Single(mine, p => p.GetProperty("finish_reason").ValueKind == JsonValueKind.String);
            Assert.Equal(8, mine.Sum(p => p.GetProperty("logprobs").GetProperty("tokens").GetArrayLength()));
        }

        // Chat: a role delta per choice, then each choice's content under its index.
        var chat = await StreamAsync(f.KvAware, "/v1/chat/completions",
            """{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0,"ignore_eos":true,"n":2,"stream":true}""");
        var chatParts = chat.Select(c => Assert.Single(c.GetProperty("choices").EnumerateArray())).ToList();
        Assert.Equal([0, 1], chatParts.Where(p => p.GetProperty("delta").TryGetProperty("role", out _)).Select(p => p.GetProperty("index").GetInt32()).Order());
        Assert.Equal([0, 1], chatParts.Where(p => p.GetProperty("finish_reason").ValueKind == JsonValueKind.String).Select(p => p.GetProperty("index").GetInt32()).Order());
    }
}

/// <summary>Failures of one of n children and migration with logprobs, on workers of their own (faults are per worker).</summary>
[Collection(nameof(KeepAliveTests))]
public sealed class ChoiceFailureTests
{
    private static string Model => TestModels.TinyLlama;

    [Fact]
    public async Task One_failed_child_fails_the_request_and_its_siblings_stop()
    {
        var worker = await TestWorkers.StartAsync(Model);
        var router = await RouterHost.StartAsync(Model, [worker.Address], "--migration-limit", "0");
        try
        {
            await router.WaitForWorkers(1);
            const string json = """{"model":"tiny","prompt":"a long story","max_tokens":900,"temperature":1,"seed":3,"ignore_eos":true,"n":3}""";
            // The first Generate call fails after 3 chunks; the other two would run on for 900 steps of at least 10 ms.
            worker.Engine.BeforeStep = () => Thread.Sleep(10);
            worker.Faults.FailureBudget = new FailureBudget(1);
            worker.Faults.FailAfterChunks = 3;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var (status, body, _) = await router.PostAsync("/v1/completions", json);
            Assert.Equal(502, status);
            ErrorShape.Assert(body);
            // The answer did not wait for the siblings to finish: they were cancelled.
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"answered after {clock.Elapsed}");
            await RouterHost.Eventually(() => worker.Engine.GetStats().Running + worker.Engine.GetStats().Waiting == 0, "the siblings' generations to stop", 3000);

            worker.Faults.FailureBudget = new FailureBudget(1);
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent(json.Replace("}", ",\"stream\":true}", StringComparison.Ordinal), Encoding.UTF8, "application/json"),
            };
            using var response = await router.Http.SendAsync(request);
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            ErrorShape.Assert(JsonDocument.Parse(events[^2][6..]).RootElement);
            await RouterHost.Eventually(() => worker.Engine.GetStats().Running + worker.Engine.GetStats().Waiting == 0, "the siblings' generations to stop", 3000);
        }
        finally
        {
            worker.Engine.BeforeStep = null;
            await router.DisposeAsync();
            await worker.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_migrated_request_continues_its_logprobs_as_the_undisturbed_run()
    {
        var workers = await Task.WhenAll(TestWorkers.StartAsync(Model), TestWorkers.StartAsync(Model));
        var router = await RouterHost.StartAsync(Model, workers.Select(w => w.Address));
        try
        {
            await router.WaitForWorkers(2);
            const string json = """{"model":"tiny","prompt":"the harbour","max_tokens":20,"temperature":0.8,"seed":9,"ignore_eos":true,"logprobs":2}""";
            var (_, reference, _) = await router.PostAsync("/v1/completions", json);
            var budget = new FailureBudget(1);
            foreach (var w in workers)
            {
                w.Faults.FailAfterChunks = 7;
                w.Faults.FailureBudget = budget;
            }
            var (status, moved, _) = await router.PostAsync("/v1/completions", json);
            Assert.True(status == 200, moved.ToString());
            Assert.Equal(0, budget.Remaining);
            var a = reference.GetProperty("choices")[0].GetProperty("logprobs");
            var b = moved.GetProperty("choices")[0].GetProperty("logprobs");
            Assert.Equal(20, b.GetProperty("tokens").GetArrayLength());
            Assert.Equal(a.GetProperty("tokens").ToString(), b.GetProperty("tokens").ToString());
            var x = a.GetProperty("token_logprobs").EnumerateArray().Select(e => e.GetDouble()).ToList();
            var y = b.GetProperty("token_logprobs").EnumerateArray().Select(e => e.GetDouble()).ToList();
            for (int i = 0; i < x.Count; i++) Assert.Equal(x[i], y[i], 3);
        }
        finally
        {
            await router.DisposeAsync();
            foreach (var w in workers) await w.DisposeAsync();
        }
    }
}

public sealed class TokenPiecesTests
{
    [Fact]
    public void A_token_that_is_part_of_a_character_is_shown_as_its_bytes_and_whole_text_as_itself()
    {
        var partial = Platform.Router.Api.TokenPieces.Build([0xE2, 0x80]);
        Assert.Equal("bytes:\\xe2\\x80", partial.Text);
        Assert.Equal([0xE2, 0x80], partial.Bytes);
        var whole = Platform.Router.Api.TokenPieces.Build(Encoding.UTF8.GetBytes(" café🙂"));
        Assert.Equal(" café🙂", whole.Text);
        Assert.Equal(6, whole.TextLength); // code points, as Python's len
        Assert.Equal("", Platform.Router.Api.TokenPieces.Build([]).Text);
    }
}
