// Writing a generation's choices. A request with n > 1 runs as n generations (one MigratingStream each, see
// OpenAiEndpoints.HandleAdmittedAsync); here they become one response: non-streamed, one body with choices
// 0..n-1; streamed, SSE chunks as each generation's tokens arrive, every chunk naming its choice's index.
// Usage counts the prompt once and the completion tokens of all choices (vLLM's rule). The first failure
// of any generation (after its own retries and migrations) fails the whole request as a single one would:
// an error status before anything was sent, an SSE error event after; the other generations are cancelled.
//
// Log-probabilities, when asked, in each API's shape (tokens shown by TokenPieces):
//  * completions, OpenAI's legacy object: tokens, token_logprobs, top_logprobs (per token a map of token
//    text → logprob holding the sampled token first, then the `logprobs` most likely ones: up to logprobs
//    + 1 entries, as vLLM), text_offset (code points of the tokens before, within the choice);
//  * chat: content, a list of {token, logprob, bytes, top_logprobs: the `top_logprobs` most likely tokens,
//    best first, each {token, logprob, bytes}}.
// Values below -9999 (a -inf logit) are written as -9999, as vLLM and OpenAI do. Streamed chunks carry the
// log-probabilities of the tokens they bring; a chunk with tokens but no text yet is still sent for them.
//
// Tool calls (tool_choice auto): each choice's text goes through a ToolCallStream; calls come back as
// message.tool_calls (streamed: one delta with every call whole, then finish_reason "tool_calls").
using System.Text;
using System.Text.Json;
using Platform.Core.Protos;
using Platform.Router.Api.ToolCalls;
using Platform.Router.Forwarding;

namespace Platform.Router.Api;

public sealed partial class OpenAiEndpoints
{
    private sealed record ResponseShape(bool Chat, string Id, long Created, string Model, int PromptTokens, bool Logprobs)
    {
        /// <summary>Set when the request's tool_choice is auto: each choice's text is read for tool calls in this format.</summary>
        public ToolCallParser? ToolCalls { get; init; }

        public bool ParallelToolCalls { get; init; } = true;

        public ChoiceState NewChoice(int index) =>
            new(index) { ToolCalls = ToolCalls is { } parser ? new ToolCallStream(parser, ParallelToolCalls) : null };
    }

    /// <summary>What one choice has produced so far.</summary>
    private sealed class ChoiceState(int index)
    {
        public int Index { get; } = index;
        public StringBuilder Text { get; } = new();
        public int CompletionTokens { get; private set; }
        public string? FinishReason { get; private set; }
        /// <summary>Non-streamed: every token with its log-probabilities, for the body.</summary>
        public List<(int Token, TokenLogprob Logprob)> Logprobs { get; } = [];
        /// <summary>Completions' text_offset of the next token (code points of the token texts before it).</summary>
        public int TextOffset { get; set; }

        /// <summary>With tool_choice auto: holds back the text that may be a tool call (see ToolCalls/ToolCallStream).</summary>
        public ToolCallStream? ToolCalls { get; init; }

        public void Add(GenerateChunk chunk)
        {
            CompletionTokens = Math.Max(CompletionTokens + chunk.TokenIds.Count, chunk.CompletionTokens);
            if (chunk.FinishReason == Platform.Core.Protos.FinishReason.Length) FinishReason = "length";
            else if (chunk.FinishReason != Platform.Core.Protos.FinishReason.Unspecified) FinishReason = "stop";
        }
    }

    /// <summary>Usage of the whole response: the prompt once (and what of it was cached), completion tokens summed over choices.</summary>
    private sealed class Usage(int promptTokens)
    {
        public int PromptTokens { get; private set; } = promptTokens;
        public int CachedTokens { get; private set; }
        /// <summary>Cached prompt tokens by the KV tier they came from (device, host memory, shared remote store).</summary>
        public (int Device, int Host, int Remote) CachedByTier { get; private set; }

        public void Add(GenerateChunk chunk)
        {
            if (chunk.PromptTokens > 0) PromptTokens = chunk.PromptTokens;
            if (chunk.Cached is { } c && c.Device + c.Host + c.Remote >= CachedTokens)
            {
                CachedTokens = c.Device + c.Host + c.Remote;
                CachedByTier = (c.Device, c.Host, c.Remote);
            }
        }

        public void Write(Utf8JsonWriter w, IEnumerable<ChoiceState> choices)
        {
            int completion = choices.Sum(c => c.CompletionTokens);
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", PromptTokens);
            w.WriteNumber("completion_tokens", completion);
            w.WriteNumber("total_tokens", PromptTokens + completion);
            w.WriteStartObject("prompt_tokens_details");
            w.WriteNumber("cached_tokens", CachedTokens);
            // Extension (OpenAI clients ignore unknown fields): where the cached tokens came from.
            w.WriteStartObject("cached_tokens_by_tier");
            w.WriteNumber("device", CachedByTier.Device);
            w.WriteNumber("host", CachedByTier.Host);
            w.WriteNumber("remote", CachedByTier.Remote);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        }
    }

    /// <summary>The first real failure among the generations' reads (a sibling cancelled because of it reads as Canceled).</summary>
    private static StreamRead FirstFailure(IEnumerable<StreamRead> failures)
    {
        StreamRead? canceled = null;
        foreach (var f in failures)
        {
            if (f.Error != ForwarderError.Canceled) return f;
            canceled ??= f;
        }
        return canceled ?? default;
    }

    private async Task CollectAsync(HttpContext context, string route, List<MigratingStream> streams, ResponseShape shape, Deadline deadline,
        CancellationTokenSource siblings)
    {
        var usage = new Usage(shape.PromptTokens);
        var choices = streams.Select((_, i) => shape.NewChoice(i)).ToArray();
        var failures = new List<StreamRead>();

        async Task CollectOne(int i)
        {
            while (true)
            {
                var read = await streams[i].ReadAsync().ConfigureAwait(false);
                if (read.Error != ForwarderError.None)
                {
                    lock (failures) failures.Add(read);
                    // One failed choice fails the request: stop the others' generations now.
                    await siblings.CancelAsync().ConfigureAwait(false);
                    return;
                }
                if (read.IsEnd) return;
                var chunk = read.Chunk!;
                lock (usage) usage.Add(chunk);
                choices[i].Add(chunk);
                choices[i].Text.Append(chunk.Text);
                if (shape.Logprobs) AddLogprobs(choices[i].Logprobs, chunk);
                if (chunk.FinishReason != Platform.Core.Protos.FinishReason.Unspecified) return;
            }
        }
        await Task.WhenAll(Enumerable.Range(0, streams.Count).Select(CollectOne)).ConfigureAwait(false);

        if (failures.Count > 0)
        {
            var read = FirstFailure(failures);
            if (read.Error == ForwarderError.Canceled && deadline.Passed)
                read = new StreamRead(null, ForwarderError.DeadlineExceeded, deadline.Message(null));
            if (read.Error == ForwarderError.Canceled)
            {
                _metrics.Request(route, 499);
                return;
            }
            // Nothing was sent yet: an aborted generation is a retriable 503, never a truncated 200.
            if (read.Error == ForwarderError.Aborted) context.Response.Headers.RetryAfter = "1";
            await Fail(context, route, new ApiError(ForwarderErrors.HttpStatus(read.Error), read.Message, ApiError.Server, null, SnakeCase(read.Error))).ConfigureAwait(false);
            return;
        }

        context.Response.ContentType = "application/json";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        w.WriteStartObject();
        w.WriteString("id", shape.Id);
        w.WriteString("object", shape.Chat ? "chat.completion" : "text_completion");
        w.WriteNumber("created", shape.Created);
        w.WriteString("model", shape.Model);
        w.WriteStartArray("choices");
        foreach (var choice in choices)
        {
            string? content = choice.Text.ToString();
            IReadOnlyList<ParsedToolCall> calls = [];
            if (choice.ToolCalls is { } toolCalls)
            {
                string head = toolCalls.Push(content);
                (var rest, calls) = toolCalls.Finish();
                content = head + rest;
                if (calls.Count > 0 && content.Trim().Length == 0) content = null;
            }
            w.WriteStartObject();
            w.WriteNumber("index", choice.Index);
            if (shape.Chat)
            {
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                w.WriteString("content", content);
                if (calls.Count > 0) WriteToolCalls(w, calls, streaming: false);
                w.WriteEndObject();
            }
            else w.WriteString("text", content);
            WriteLogprobs(w, shape, choice, choice.Logprobs);
            w.WriteString("finish_reason", calls.Count > 0 ? "tool_calls" : choice.FinishReason ?? "stop");
            w.WriteEndObject();
        }
        w.WriteEndArray();
        usage.Write(w, choices);
        w.WriteEndObject();
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        _metrics.Request(route, 200);
    }

    private static void AddLogprobs(List<(int Token, TokenLogprob Logprob)> into, GenerateChunk chunk)
    {
        // One entry per token; a worker that sent fewer (it should not) leaves those tokens out rather than misaligning them.
        int count = Math.Min(chunk.TokenIds.Count, chunk.Logprobs.Count);
        for (int i = 0; i < count; i++) into.Add((chunk.TokenIds[i], chunk.Logprobs[i]));
    }

    private async Task StreamAsync(HttpContext context, string route, List<MigratingStream> streams, ResponseShape shape, bool includeUsage,
        Deadline deadline, CancellationTokenSource siblings)
    {
        StartSse(context);
        var body = context.Response.BodyWriter;
        var usage = new Usage(shape.PromptTokens);
        var choices = streams.Select((_, i) => shape.NewChoice(i)).ToArray();
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(512);
        var abort = context.RequestAborted;
        var pending = new Task<StreamRead>?[streams.Count];
        int status = 200;
        try
        {
            if (shape.Chat)
                foreach (var choice in choices) await SendAsync(w => Chunk(w, shape, choice, roleDelta: true, text: "", finish: null, logprobs: null)).ConfigureAwait(false);
            for (int i = 0; i < streams.Count; i++) pending[i] = streams[i].ReadAsync();
            int open = streams.Count;
            while (open > 0)
            {
                var done = await Task.WhenAny(pending.OfType<Task<StreamRead>>()).ConfigureAwait(false);
                int i = Array.IndexOf(pending, done);
                pending[i] = null;
                var read = await done.ConfigureAwait(false);
                var choice = choices[i];
                if (read.Error == ForwarderError.Canceled && deadline.Passed)
                    read = new StreamRead(null, ForwarderError.DeadlineExceeded, deadline.Message(null));
                if (read.Error == ForwarderError.Canceled)
                {
                    status = 499;
                    return;
                }
                if (read.Error != ForwarderError.None)
                {
                    // Tokens may already be on the wire: end with an error event, never hang. An aborted
                    // generation's last text (if any) goes out first, without a finish_reason.
                    if (read.Chunk is { Text.Length: > 0 } partial)
                    {
                        usage.Add(partial);
                        choice.Add(partial);
                        await SendAsync(w => Chunk(w, shape, choice, roleDelta: false, partial.Text, null, LogprobsOf(shape, partial))).ConfigureAwait(false);
                    }
                    status = ForwarderErrors.HttpStatus(read.Error);
                    LogMidStreamFailure(_logger, streams[i].WorkerId, read.Message);
                    await SendAsync(w => new ApiError(status, read.Message, ApiError.Server, null, SnakeCase(read.Error)).WriteBody(w)).ConfigureAwait(false);
                    break;
                }
                if (read.IsEnd)
                {
                    open--;
                    continue;
                }
                var chunk = read.Chunk!;
                usage.Add(chunk);
                choice.Add(chunk);
                bool last = chunk.FinishReason != Platform.Core.Protos.FinishReason.Unspecified;
                var logprobs = LogprobsOf(shape, chunk);
                // Text that may be a tool call is held back until the end, then sent as calls (or as the text it was).
                string text = choice.ToolCalls?.Push(chunk.Text) ?? chunk.Text;
                IReadOnlyList<ParsedToolCall> calls = [];
                if (last && choice.ToolCalls is { } toolCalls)
                {
                    (var rest, calls) = toolCalls.Finish();
                    text += rest;
                }
                if (calls.Count > 0)
                {
                    if (text.Length > 0 || logprobs is { Count: > 0 })
                        await SendAsync(w => Chunk(w, shape, choice, roleDelta: false, text, null, logprobs)).ConfigureAwait(false);
                    await SendAsync(w => Chunk(w, shape, choice, roleDelta: false, "", null, null, calls)).ConfigureAwait(false);
                    await SendAsync(w => Chunk(w, shape, choice, roleDelta: false, "", "tool_calls", null)).ConfigureAwait(false);
                }
                else if (text.Length > 0 || last || logprobs is { Count: > 0 })
                    await SendAsync(w => Chunk(w, shape, choice, roleDelta: false, text, last ? choice.FinishReason ?? "stop" : null, logprobs)).ConfigureAwait(false);
                if (last) open--;
                else pending[i] = streams[i].ReadAsync();
            }
            if (includeUsage && status == 200)
            {
                await SendAsync(w =>
                {
                    w.WriteStartObject();
                    Header(w, shape);
                    w.WriteStartArray("choices");
                    w.WriteEndArray();
                    usage.Write(w, choices);
                    w.WriteEndObject();
                }).ConfigureAwait(false);
            }
            await body.WriteAsync(Done, abort).ConfigureAwait(false);
            await body.FlushAsync(abort).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested)
        {
            status = 499;
        }
        finally
        {
            _metrics.Request(route, status);
            // Generations still running (another one failed, or the client left) are cancelled before their streams are disposed.
            if (pending.Any(t => t is not null))
            {
                await siblings.CancelAsync().ConfigureAwait(false);
                await Task.WhenAll(pending.OfType<Task<StreamRead>>()).ConfigureAwait(false);
            }
        }

        async Task SendAsync(Action<Utf8JsonWriter> write)
        {
            buffer.ResetWrittenCount();
            using (var w = new Utf8JsonWriter(buffer)) write(w);
            await body.WriteAsync(DataPrefix, abort).ConfigureAwait(false);
            await body.WriteAsync(buffer.WrittenMemory, abort).ConfigureAwait(false);
            await body.WriteAsync(EventEnd, abort).ConfigureAwait(false);
            await body.FlushAsync(abort).ConfigureAwait(false);
        }
    }

    private static List<(int Token, TokenLogprob Logprob)>? LogprobsOf(ResponseShape shape, GenerateChunk chunk)
    {
        if (!shape.Logprobs) return null;
        var list = new List<(int, TokenLogprob)>(chunk.TokenIds.Count);
        AddLogprobs(list, chunk);
        return list;
    }

    private static void Header(Utf8JsonWriter w, ResponseShape shape)
    {
        w.WriteString("id", shape.Id);
        w.WriteString("object", shape.Chat ? "chat.completion.chunk" : "text_completion");
        w.WriteNumber("created", shape.Created);
        w.WriteString("model", shape.Model);
    }

    private void Chunk(Utf8JsonWriter w, ResponseShape shape, ChoiceState choice, bool roleDelta, string text, string? finish,
        List<(int Token, TokenLogprob Logprob)>? logprobs, IReadOnlyList<ParsedToolCall>? toolCalls = null)
    {
        w.WriteStartObject();
        Header(w, shape);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", choice.Index);
        if (shape.Chat)
        {
            w.WriteStartObject("delta");
            if (roleDelta) w.WriteString("role", "assistant");
            if (roleDelta || text.Length > 0) w.WriteString("content", text);
            if (toolCalls is { Count: > 0 }) WriteToolCalls(w, toolCalls, streaming: true);
            w.WriteEndObject();
        }
        else w.WriteString("text", text);
        if (logprobs is null) w.WriteNull("logprobs");
        else WriteLogprobs(w, shape, choice, logprobs);
        if (finish is null) w.WriteNull("finish_reason");
        else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>OpenAI's tool_calls array; in a stream each call also carries its index (calls are sent whole, in one delta).</summary>
    private static void WriteToolCalls(Utf8JsonWriter w, IReadOnlyList<ParsedToolCall> calls, bool streaming)
    {
        w.WriteStartArray("tool_calls");
        for (int i = 0; i < calls.Count; i++)
        {
            w.WriteStartObject();
            if (streaming) w.WriteNumber("index", i);
            w.WriteString("id", calls[i].Id);
            w.WriteString("type", "function");
            w.WriteStartObject("function");
            w.WriteString("name", calls[i].Name);
            w.WriteString("arguments", calls[i].Arguments);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>The choice's "logprobs" member for these tokens, in the API's shape; null when the request did not ask.</summary>
    private void WriteLogprobs(Utf8JsonWriter w, ResponseShape shape, ChoiceState choice, List<(int Token, TokenLogprob Logprob)> entries)
    {
        if (!shape.Logprobs)
        {
            w.WriteNull("logprobs");
            return;
        }
        w.WriteStartObject("logprobs");
        if (shape.Chat) WriteChatLogprobs(w, entries);
        else WriteCompletionLogprobs(w, choice, entries);
        w.WriteEndObject();
    }

    private static double Clamp(float logprob) => Math.Max(logprob, -9999.0);

    private void WriteChatLogprobs(Utf8JsonWriter w, List<(int Token, TokenLogprob Logprob)> entries)
    {
        w.WriteStartArray("content");
        foreach (var (token, lp) in entries)
        {
            w.WriteStartObject();
            WriteChatToken(w, token, lp.Logprob);
            w.WriteStartArray("top_logprobs");
            for (int k = 0; k < lp.TopTokenIds.Count; k++)
            {
                w.WriteStartObject();
                WriteChatToken(w, lp.TopTokenIds[k], lp.TopLogprobs[k]);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private void WriteChatToken(Utf8JsonWriter w, int token, float logprob)
    {
        var piece = _pieces.Get(token);
        w.WriteString("token", piece.Text);
        w.WriteNumber("logprob", Clamp(logprob));
        w.WriteStartArray("bytes");
        foreach (byte b in piece.Bytes) w.WriteNumberValue(b);
        w.WriteEndArray();
    }

    private void WriteCompletionLogprobs(Utf8JsonWriter w, ChoiceState choice, List<(int Token, TokenLogprob Logprob)> entries)
    {
        w.WriteStartArray("tokens");
        foreach (var (token, _) in entries) w.WriteStringValue(_pieces.Get(token).Text);
        w.WriteEndArray();
        w.WriteStartArray("token_logprobs");
        foreach (var (_, lp) in entries) w.WriteNumberValue(Clamp(lp.Logprob));
        w.WriteEndArray();
        w.WriteStartArray("top_logprobs");
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (token, lp) in entries)
        {
            // The sampled token first, then the most likely ones; two ids with the same text keep the first (a JSON key is unique).
            w.WriteStartObject();
            written.Clear();
            var sampled = _pieces.Get(token).Text;
            written.Add(sampled);
            w.WriteNumber(sampled, Clamp(lp.Logprob));
            for (int k = 0; k < lp.TopTokenIds.Count; k++)
            {
                var text = _pieces.Get(lp.TopTokenIds[k]).Text;
                if (written.Add(text)) w.WriteNumber(text, Clamp(lp.TopLogprobs[k]));
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("text_offset");
        foreach (var (token, _) in entries)
        {
            w.WriteNumberValue(choice.TextOffset);
            choice.TextOffset += _pieces.Get(token).TextLength;
        }
        w.WriteEndArray();
    }
}
