// vLLM's tokenizer endpoints, so clients can count and inspect tokens exactly as the router
// will send them: POST /tokenize (a prompt, or chat messages rendered with the model's chat
// template) → {"count", "max_model_len", "tokens"[, "token_strs"]}, POST /detokenize
// ({"tokens"} → {"prompt"}), and GET /health (200, empty, like vLLM's; outside the API key).
using System.Text.Json;
using Platform.Core.Tokenization;

namespace Platform.Router.Api;

public sealed partial class OpenAiEndpoints
{
    public static void MapTokenizer(IEndpointRouteBuilder app)
    {
        app.MapPost("/tokenize", (HttpContext c, OpenAiEndpoints e) => e.TokenizeAsync(c));
        app.MapPost("/detokenize", (HttpContext c, OpenAiEndpoints e) => e.DetokenizeAsync(c));
        app.MapGet("/health", () => Results.Ok());
    }

    private async Task TokenizeAsync(HttpContext context)
    {
        const string route = "tokenize";
        using var doc = await ReadOrFailAsync(context, route).ConfigureAwait(false);
        if (doc is null) return;
        var root = doc.RootElement;
        IReadOnlyList<int> tokens;
        try
        {
            if (root.ValueKind != JsonValueKind.Object) throw new RequestException(ApiError.BadRequest("the request body must be a JSON object."));
            if (root.TryGetProperty("model", out var model) && model.ValueKind == JsonValueKind.String && ModelError(model.GetString()!) is { } modelError)
                throw new RequestException(modelError);
            bool addSpecial = !root.TryGetProperty("add_special_tokens", out var special) || special.ValueKind != JsonValueKind.False;
            if (root.TryGetProperty("messages", out _))
            {
                var (messages, messagesError) = OpenAiRequests.ParseMessages(root);
                if (messagesError is not null) throw new RequestException(messagesError);
                var (inputs, inputsError) = OpenAiRequests.ParseTemplateInputs(root);
                if (inputsError is not null) throw new RequestException(inputsError);
                bool generationPrompt = !root.TryGetProperty("add_generation_prompt", out var agp) || agp.ValueKind != JsonValueKind.False;
                var template = _model.ChatTemplate ?? throw new RequestException(ApiError.BadRequest(_model.ChatTemplateProblem ?? "this model has no chat template.", "messages"));
                tokens = _model.Tokenizer.Encode(template.Render(messages!, generationPrompt, inputs), addBos: false);
            }
            else if (root.TryGetProperty("prompt", out var prompt) && prompt.ValueKind == JsonValueKind.String)
            {
                tokens = addSpecial ? _model.EncodePrompt(prompt.GetString()!) : _model.Tokenizer.Encode(prompt.GetString()!, addBos: false);
            }
            else
            {
                throw new RequestException(ApiError.BadRequest("send a prompt (a string) or messages.", "prompt"));
            }
        }
        catch (ChatTemplateRenderException e)
        {
            await Fail(context, route, ApiError.BadRequest(e.Message, "messages")).ConfigureAwait(false);
            return;
        }
        catch (RequestException e)
        {
            await Fail(context, route, e.Error).ConfigureAwait(false);
            return;
        }
        catch (InvalidOperationException e)
        {
            await Fail(context, route, ApiError.BadRequest($"a string in the request is not valid Unicode text ({e.Message}); send UTF-8 JSON.", null, "invalid_text")).ConfigureAwait(false);
            return;
        }

        bool strings = root.TryGetProperty("return_token_strs", out var rts) && rts.ValueKind == JsonValueKind.True;
        context.Response.ContentType = "application/json";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        w.WriteStartObject();
        w.WriteNumber("count", tokens.Count);
        w.WriteNumber("max_model_len", MaxContext);
        w.WriteStartArray("tokens");
        foreach (var t in tokens) w.WriteNumberValue(t);
        w.WriteEndArray();
        if (strings)
        {
            w.WriteStartArray("token_strs");
            foreach (var t in tokens) w.WriteStringValue(_model.Tokenizer.IdToToken(t));
            w.WriteEndArray();
        }
        w.WriteEndObject();
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        _metrics.Request(route, 200);
    }

    private async Task DetokenizeAsync(HttpContext context)
    {
        const string route = "detokenize";
        using var doc = await ReadOrFailAsync(context, route).ConfigureAwait(false);
        if (doc is null) return;
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("tokens", out var array) || array.ValueKind != JsonValueKind.Array)
        {
            await Fail(context, route, ApiError.BadRequest("send tokens: a list of token ids.", "tokens")).ConfigureAwait(false);
            return;
        }
        var ids = new List<int>(array.GetArrayLength());
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0 || id >= _model.Tokenizer.VocabSize)
            {
                await Fail(context, route, ApiError.BadRequest($"tokens must be integers in [0, {_model.Tokenizer.VocabSize}).", "tokens")).ConfigureAwait(false);
                return;
            }
            ids.Add(id);
        }
        context.Response.ContentType = "application/json";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        w.WriteStartObject();
        w.WriteString("prompt", _model.Tokenizer.Decode(ids));
        w.WriteEndObject();
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        _metrics.Request(route, 200);
    }

    /// <summary>The JSON body, or null once the error answer (not JSON, too large, wrong Content-Type) is sent.</summary>
    private async Task<JsonDocument?> ReadOrFailAsync(HttpContext context, string route)
    {
        var (document, error) = await ReadJsonAsync(context).ConfigureAwait(false);
        if (error is null) return document;
        await Fail(context, route, error).ConfigureAwait(false);
        return null;
    }

    /// <summary>A request error found while reading a /tokenize body.</summary>
    private sealed class RequestException(ApiError error) : Exception(error.Message)
    {
        public ApiError Error { get; } = error;
    }
}
