// The router over HTTP with two in-process engine workers: API shapes, bad
// input (never reaching a worker), and KV-aware vs round-robin placement. Two
// routers share the same two workers, one per policy.
using System.Text;
using System.Text.Json;

namespace Platform.Router.Tests;

public sealed class TwoWorkerFixture : IAsyncLifetime
{
    internal InProcessWorker A { get; private set; } = null!;
    internal InProcessWorker B { get; private set; } = null!;
    internal RouterHost KvAware { get; private set; } = null!;
    internal RouterHost RoundRobin { get; private set; } = null!;
    internal string ModelDir { get; } = TestModels.TinyLlama;

    public async Task InitializeAsync()
    {
        A = await TestWorkers.StartAsync(ModelDir);
        B = await TestWorkers.StartAsync(ModelDir);
        KvAware = await RouterHost.StartAsync(ModelDir, [A.Address, B.Address]);
        RoundRobin = await RouterHost.StartAsync(ModelDir, [A.Address, B.Address], "--policy", "round-robin");
        await KvAware.WaitForWorkers(2);
        await RoundRobin.WaitForWorkers(2);
    }

    public async Task DisposeAsync()
    {
        await KvAware.DisposeAsync();
        await RoundRobin.DisposeAsync();
        await A.DisposeAsync();
        await B.DisposeAsync();
    }

    internal int GenerateCalls => A.Faults.GenerateCalls + B.Faults.GenerateCalls;
}

[CollectionDefinition("two-workers")]
public sealed class TwoWorkerCollection : ICollectionFixture<TwoWorkerFixture>;

[Collection("two-workers")]
public sealed class RouterHttpTests(TwoWorkerFixture f)
{
    private static string LongText(int seed, int words) =>
        string.Join(' ', Enumerable.Range(0, words).Select(i => $"w{(i * 7919 + seed * 104729) % 100000}"));

    [Fact]
    public async Task Models_lists_the_served_model()
    {
        var response = await f.KvAware.Http.GetStringAsync("/v1/models");
        var data = JsonDocument.Parse(response).RootElement.GetProperty("data");
        Assert.Equal("tiny", data[0].GetProperty("id").GetString());
        Assert.Equal(1024, data[0].GetProperty("max_model_len").GetInt32());
    }

    [Fact]
    public async Task Completion_returns_text_and_usage_with_cached_tokens()
    {
        var (status, body, worker) = await f.KvAware.PostAsync("/v1/completions",
            """{"model":"tiny","prompt":"hello there","max_tokens":5,"temperature":0,"ignore_eos":true}""");
        Assert.Equal(200, status);
        Assert.NotNull(worker);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.Equal("length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        var usage = body.GetProperty("usage");
        Assert.Equal(5, usage.GetProperty("completion_tokens").GetInt32());
        Assert.True(usage.GetProperty("prompt_tokens").GetInt32() > 1);
        Assert.True(usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32() >= 0);
    }

    [Fact]
    public async Task Streaming_chat_is_sse_ending_with_done()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true},"ignore_eos":true}""", Encoding.UTF8, "application/json"),
        };
        using var response = await f.KvAware.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e, StringComparison.Ordinal));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Equal("length", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(6, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
    }

    [Theory]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\"", 400, null, "invalid_json")]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"temperature\":NaN}", 400, null, "invalid_json")]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"temperature\":\"NaN\"}", 400, "temperature", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"temperature\":-0.5}", 400, "temperature", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"top_p\":1e999}", 400, "top_p", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"max_tokens\":-3}", 400, "max_tokens", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"max_tokens\":5000}", 400, "max_tokens", "context_length_exceeded")]
    [InlineData("{\"model\":\"gpt-4\",\"prompt\":\"x\"}", 404, "model", "model_not_found")]
    [InlineData("{\"prompt\":\"x\"}", 400, "model", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"n\":17}", 400, "n", null)]
    [InlineData("[1,2,3]", 400, null, null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"min_p\":1.5}", 400, "min_p", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"repetition_penalty\":0}", 400, "repetition_penalty", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"presence_penalty\":2.5}", 400, "presence_penalty", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"frequency_penalty\":-3}", 400, "frequency_penalty", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}", 400, "logit_bias", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"five\":1}}", 400, "logit_bias", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"logit_bias\":{\"99999\":1}}", 400, "logit_bias", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"stop_token_ids\":[-2]}", 400, "stop_token_ids", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"stop_token_ids\":[99999]}", 400, "stop_token_ids", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}", 400, "response_format", null)]
    [InlineData("{\"model\":\"tiny\",\"prompt\":\"x\",\"guided_choice\":[\"a\",\"b\"]}", 400, "guided_choice", null)]
    public async Task Bad_completion_input_is_a_4xx_in_openai_shape_without_worker_calls(string json, int status, string? param, string? code)
    {
        int before = f.GenerateCalls;
        var (actual, body, _) = await f.KvAware.PostAsync("/v1/completions", json);
        Assert.Equal(status, actual);
        ErrorShape.Assert(body, param, code);
        Assert.Equal(before, f.GenerateCalls);
    }

    [Fact]
    public async Task Invalid_text_a_non_json_body_and_a_prompt_too_long_to_fit_are_4xx_without_worker_calls()
    {
        int before = f.GenerateCalls;
        async Task<(int Status, JsonElement Body)> Send(byte[] body, string contentType, string path = "/v1/completions")
        {
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = System.Net.Http.Headers.MediaTypeHeaderValue.Parse(contentType);
            using var response = await f.KvAware.Http.PostAsync(path, content);
            return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
        }
        byte[] Utf8(string text) => System.Text.Encoding.UTF8.GetBytes(text);

        // Bytes that are not UTF-8 inside a string, and an escaped lone surrogate: 400 in OpenAI's shape, never a 500.
        var (s1, b1) = await Send([.. Utf8("{\"model\":\"tiny\",\"prompt\":\"ab"), 0xC3, 0x28, .. Utf8("\"}")], "application/json");
        Assert.Equal(400, s1);
        ErrorShape.Assert(b1);
        var (s2, b2) = await Send(Utf8("{\"model\":\"tiny\",\"prompt\":\"x\\ud800y\"}"), "application/json");
        Assert.Equal(400, s2);
        ErrorShape.Assert(b2, null, "invalid_text");
        var (s3, b3) = await Send(Utf8("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"\\udc00\"}]}"), "application/json", "/v1/chat/completions");
        Assert.Equal(400, s3);
        ErrorShape.Assert(b3, null, "invalid_text");

        // Not JSON by its Content-Type: 415. A JSON subtype (+json) and a charset parameter are fine.
        var (s4, b4) = await Send(Utf8("{\"model\":\"tiny\",\"prompt\":\"x\",\"max_tokens\":1}"), "text/plain");
        Assert.Equal(415, s4);
        ErrorShape.Assert(b4, null, "unsupported_media_type");
        var (s5, _) = await Send(Utf8("{\"model\":\"gpt-4\",\"prompt\":\"x\"}"), "application/json; charset=utf-8");
        Assert.Equal(404, s5);

        // Megabytes of text for a 1,024-token model: refused from its length alone, before tokenizing.
        var huge = JsonSerializer.Serialize(new { model = "tiny", prompt = string.Concat(Enumerable.Repeat("lorem ipsum ", 400_000)), max_tokens = 1 });
        var (s6, b6) = await Send(Utf8(huge), "application/json");
        Assert.Equal(400, s6);
        ErrorShape.Assert(b6, "prompt", "context_length_exceeded");
        Assert.Contains("characters cannot fit", b6.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(before, f.GenerateCalls);
    }

    [Fact]
    public async Task Unhonoured_parameters_at_their_neutral_values_are_accepted()
    {
        var (status, body, _) = await f.KvAware.PostAsync("/v1/completions",
            """{"model":"tiny","prompt":"x","max_tokens":1,"min_p":0,"repetition_penalty":1,"logit_bias":{},"stop_token_ids":[],"response_format":{"type":"text"},"best_of":1,"min_tokens":0,"top_logprobs":null}""");
        Assert.True(status == 200, body.ToString());
    }

    [Fact]
    public async Task Tokenize_counts_what_a_completion_sends_and_detokenize_round_trips()
    {
        int before = f.GenerateCalls;
        const string text = "The quick brown fox jumps over the lazy dog";
        var (s1, tokenized, _) = await f.KvAware.PostAsync("/tokenize", JsonSerializer.Serialize(new { model = "tiny", prompt = text }));
        Assert.True(s1 == 200, tokenized.ToString());
        int count = tokenized.GetProperty("count").GetInt32();
        Assert.Equal(count, tokenized.GetProperty("tokens").GetArrayLength());
        Assert.True(tokenized.GetProperty("max_model_len").GetInt32() > count);
        Assert.Equal(before, f.GenerateCalls);

        // The same count the router reports for a completion of that prompt.
        var (s2, completion, _) = await f.KvAware.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = text, max_tokens = 1 }));
        Assert.Equal(200, s2);
        Assert.Equal(count, completion.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        // Without special tokens, detokenize gives the text back.
        var (_, plain, _) = await f.KvAware.PostAsync("/tokenize", JsonSerializer.Serialize(new { model = "tiny", prompt = text, add_special_tokens = false, return_token_strs = true }));
        Assert.Equal(plain.GetProperty("tokens").GetArrayLength(), plain.GetProperty("token_strs").GetArrayLength());
        var (s3, detok, _) = await f.KvAware.PostAsync("/detokenize", JsonSerializer.Serialize(new { model = "tiny", tokens = plain.GetProperty("tokens") }));
        Assert.Equal(200, s3);
        Assert.Equal(text, detok.GetProperty("prompt").GetString());

        var (s4, bad, _) = await f.KvAware.PostAsync("/detokenize", """{"tokens":[-1]}""");
        Assert.Equal(400, s4);
        ErrorShape.Assert(bad, "tokens");
        using var health = await f.KvAware.Http.GetAsync("/health");
        Assert.Equal(200, (int)health.StatusCode);
    }

    [Fact]
    public async Task Stop_token_ids_end_generation_on_any_of_them()
    {
        // Every id of the vocabulary is a stop token: the first generated token ends the completion.
        int vocab = Platform.Core.Models.ModelConfig.Load(TestModels.TinyLlama).VocabSize;
        var (s1, stopped, _) = await f.KvAware.PostAsync("/v1/completions", JsonSerializer.Serialize(new
        {
            model = "tiny", prompt = "count with me", max_tokens = 8, temperature = 0, ignore_eos = true, stop_token_ids = Enumerable.Range(0, vocab),
        }));
        Assert.True(s1 == 200, stopped.ToString());
        Assert.Equal("stop", stopped.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(1, stopped.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var (_, free, _) = await f.KvAware.PostAsync("/v1/completions", JsonSerializer.Serialize(new
        {
            model = "tiny", prompt = "count with me", max_tokens = 8, temperature = 0, ignore_eos = true, stop_token_ids = Array.Empty<int>(),
        }));
        Assert.Equal("length", free.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Over_long_prompts_and_bad_chat_messages_never_reach_a_worker()
    {
        int before = f.GenerateCalls;
        var (s1, b1, _) = await f.KvAware.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = LongText(1, 3000), max_tokens = 1 }));
        Assert.Equal(400, s1);
        ErrorShape.Assert(b1, "prompt", "context_length_exceeded");
        var (s2, b2, _) = await f.KvAware.PostAsync("/v1/chat/completions", """{"model":"tiny","messages":[{"role":"wizard","content":"x"}]}""");
        Assert.Equal(400, s2);
        ErrorShape.Assert(b2, "messages[0].role");
        var (s3, b3, _) = await f.KvAware.PostAsync("/v1/chat/completions", """{"model":"tiny","messages":[]}""");
        Assert.Equal(400, s3);
        ErrorShape.Assert(b3, "messages");
        Assert.Equal(before, f.GenerateCalls);
    }

    [Fact]
    public async Task Kv_aware_sends_a_shared_prefix_back_to_its_worker_and_reports_cached_tokens()
    {
        string system = LongText(42, 100); // several hundred tokens: many full 16-token blocks
        string Ask(string q) => JsonSerializer.Serialize(new { model = "tiny", prompt = system + " " + q, max_tokens = 2, temperature = 0 });

        var (s1, first, w1) = await f.KvAware.PostAsync("/v1/completions", Ask("first question"));
        Assert.True(s1 == 200, first.ToString());
        int promptTokens = first.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        Assert.True(promptTokens > 160, $"prompt has {promptTokens} tokens");
        await RouterHost.Eventually(() => f.KvAware.Index.WorkerBlockCount(w1!) >= promptTokens / 16 - 1, "the index learns the first prompt's blocks");

        for (int i = 0; i < 3; i++)
        {
            var (s2, second, w2) = await f.KvAware.PostAsync("/v1/completions", Ask("another question " + i));
            Assert.Equal(200, s2);
            Assert.Equal(w1, w2);
            int cached = second.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
            Assert.True(cached >= promptTokens - 48, $"cached {cached} of about {promptTokens}");
        }
    }

    [Fact]
    public async Task A_session_header_keeps_a_conversation_on_one_worker()
    {
        var workers = new HashSet<string>();
        for (int i = 0; i < 6; i++)
        {
            var (status, body, worker) = await f.KvAware.PostAsync("/v1/completions",
                JsonSerializer.Serialize(new { model = "tiny", prompt = LongText(1000 + i, 20), max_tokens = 1 }), session: "conversation-17");
            Assert.True(status == 200, body.ToString());
            workers.Add(worker!);
        }
        Assert.Single(workers);
    }

    [Fact]
    public async Task Round_robin_ignores_the_cache()
    {
        string system = LongText(77, 100);
        string Ask(string q) => JsonSerializer.Serialize(new { model = "tiny", prompt = system + " " + q, max_tokens = 2, temperature = 0 });
        var (s1, first, w1) = await f.RoundRobin.PostAsync("/v1/completions", Ask("one"));
        Assert.True(s1 == 200, first.ToString());
        await RouterHost.Eventually(() => f.RoundRobin.Index.WorkerBlockCount(w1!) > 5, "the index learns the first prompt's blocks");
        var (s2, second, w2) = await f.RoundRobin.PostAsync("/v1/completions", Ask("two"));
        Assert.True(s2 == 200, second.ToString());
        Assert.NotEqual(w1, w2);
        Assert.Equal(0, second.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
    }

    [Fact]
    public async Task The_callers_trace_context_reaches_the_worker()
    {
        const string traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"model":"tiny","prompt":"trace me","max_tokens":1}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("traceparent", $"00-{traceId}-00f067aa0ba902b7-01");
        // The router runs in this process, so its HTTP tracing would also rewrite this client's header: switch that off here.
        using var handler = new SocketsHttpHandler { ActivityHeadersPropagator = null };
        using var client = new HttpClient(handler) { BaseAddress = new Uri(f.KvAware.Address) };
        using var response = await client.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode);
        string worker = response.Headers.GetValues("x-platform-worker").Single();
        var faults = worker == f.A.Address ? f.A.Faults : f.B.Faults;
        Assert.NotNull(faults.LastTraceParent);
        Assert.Equal(traceId, faults.LastTraceParent!.Split('-')[1]);
        Assert.NotEqual("00f067aa0ba902b7", faults.LastTraceParent.Split('-')[2]); // the router's own span is the parent
    }

    [Fact]
    public async Task Health_ready_and_metrics_answer()
    {
        Assert.Equal("ok", await f.KvAware.Http.GetStringAsync("/healthz"));
        using (var ready = System.Text.Json.JsonDocument.Parse(await f.KvAware.Http.GetStringAsync("/readyz")))
        {
            Assert.True(ready.RootElement.GetProperty("ready").GetBoolean());
            Assert.True(ready.RootElement.GetProperty("workers_in_pool").GetInt32() >= 1);
        }
        await f.KvAware.PostAsync("/v1/completions", """{"model":"tiny","prompt":"metrics please","max_tokens":1}""");
        var metrics = await f.KvAware.Http.GetStringAsync("/metrics");
        Assert.Contains("router_placements", metrics, StringComparison.Ordinal);
        Assert.Contains("policy=\"kv-aware\"", metrics, StringComparison.Ordinal);
        Assert.Contains("router_workers_available", metrics, StringComparison.Ordinal);
        Assert.Contains("router_overhead_seconds_bucket", metrics, StringComparison.Ordinal);
    }
}
