// Parsing and validating OpenAI request bodies (completions and chat
// completions) into plain values. Everything a client can get wrong is caught
// here, before any worker is involved, and reported as a 400 naming the
// parameter: wrong types, non-finite or out-of-range sampling values, features
// we do not serve (echo, suffix, best_of other than n, guided decoding). Unknown
// fields are ignored, as OpenAI-compatible servers commonly do. logprobs has two
// shapes: an integer (0..20 alternatives) on completions, a boolean plus
// top_logprobs (0..20) on chat, where top_logprobs without logprobs: true is an
// error as on OpenAI's API.
using System.Text.Json;
using Platform.Core.Models;
using Platform.Core.Tokenization;

namespace Platform.Router.Api;

/// <summary>Sampling as the request gave it; null temperature, top_p or top_k: left out (the model's
/// generation_config.json, then the API's defaults, apply).</summary>
public sealed record SamplingRequest(
    string Model, int? MaxTokens, double? Temperature, double? TopP, int? TopK, ulong? Seed,
    IReadOnlyList<string> Stop, bool Stream, bool IncludeUsage, bool IgnoreEos)
{
    /// <summary>logit_bias: token id → value added to its logit, [-100, 100].</summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();

    public double PresencePenalty { get; init; }
    public double FrequencyPenalty { get; init; }
    /// <summary>repetition_penalty as given; null: left out (generation_config.json's, else 1).</summary>
    public double? RepetitionPenalty { get; init; }

    /// <summary>min_p: tokens less likely than this fraction of the most likely one are not drawn (0: off).</summary>
    public double MinP { get; init; }

    /// <summary>stop_token_ids (vLLM's extension): generation ends on any of these tokens, EOS or not.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Log-probabilities asked for: null none; else the number of most likely alternatives per token (0..20).</summary>
    public int? Logprobs { get; init; }

    /// <summary>n: how many choices (independent generations of the same prompt), 1..<see cref="OpenAiRequests.MaxChoices"/>.</summary>
    public int N { get; init; } = 1;

    /// <summary>What is sent to the worker: the request's values, else the model's generation_config.json, else the API's defaults (1, 1, no top-k).</summary>
    public (double Temperature, double TopP, int TopK) Resolve(GenerationConfig defaults)
    {
        ArgumentNullException.ThrowIfNull(defaults);
        return (Temperature ?? defaults.Temperature ?? 1.0, TopP ?? defaults.TopP ?? 1.0, TopK ?? Math.Max(0, defaults.TopK ?? 0));
    }
}

/// <summary>A completion request: text to tokenize, or token ids given directly.</summary>
public sealed record CompletionRequest(SamplingRequest Sampling, string? PromptText, IReadOnlyList<int>? PromptIds);

public static partial class OpenAiRequests
{
    /// <summary>The largest n served: each choice is a generation of its own, so n multiplies a request's cost.</summary>
    public const int MaxChoices = 16;

    /// <summary>The most alternatives per token (vLLM's default max_logprobs; OpenAI's top_logprobs bound).</summary>
    public const int MaxLogprobs = 20;

    public static (CompletionRequest? Request, ApiError? Error) ParseCompletion(JsonElement root)
    {
        var (sampling, error) = ParseSampling(root, chat: false);
        if (error is not null) return (null, error);
        if (root.TryGetProperty("echo", out var echo) && echo.ValueKind == JsonValueKind.True)
            return (null, ApiError.BadRequest("echo is not supported; remove it.", "echo"));
        if (root.TryGetProperty("best_of", out var bestOf) && bestOf.ValueKind != JsonValueKind.Null
            && (bestOf.ValueKind != JsonValueKind.Number || !bestOf.TryGetInt32(out var b) || b != sampling!.N))
            return (null, ApiError.BadRequest($"best_of must equal n ({sampling!.N}): ranking more generations than are returned is not supported; leave best_of out or send n choices.", "best_of"));
        if (root.TryGetProperty("suffix", out var suffix) && suffix.ValueKind == JsonValueKind.String && suffix.GetString()!.Length > 0)
            return (null, ApiError.BadRequest("suffix is not supported; remove it.", "suffix"));
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            return (null, ApiError.BadRequest("you must provide a prompt.", "prompt"));

        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return Text(prompt.GetString()!);
            case JsonValueKind.Array:
                int n = prompt.GetArrayLength();
                if (n == 0) return (null, ApiError.BadRequest("prompt is an empty list.", "prompt"));
                var first = prompt[0];
                if (first.ValueKind == JsonValueKind.String)
                    return n == 1 ? Text(first.GetString()!) : (null, ApiError.BadRequest("only one prompt per request is supported; send one string.", "prompt"));
                if (first.ValueKind == JsonValueKind.Array)
                    return n == 1 ? Ids(first) : (null, ApiError.BadRequest("only one prompt per request is supported; send one list of token ids.", "prompt"));
                return Ids(prompt);
            default:
                return (null, ApiError.BadRequest("prompt must be a string, a list of token ids, or a one-element list of either.", "prompt"));
        }

        (CompletionRequest?, ApiError?) Text(string text) =>
            text.Length == 0
                ? (null, ApiError.BadRequest("prompt is empty.", "prompt"))
                : (new CompletionRequest(sampling!, text, null), null);

        (CompletionRequest?, ApiError?) Ids(JsonElement array)
        {
            var ids = new List<int>(array.GetArrayLength());
            foreach (var e in array.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0)
                    return (null, ApiError.BadRequest("prompt token ids must be non-negative integers.", "prompt"));
                ids.Add(id);
            }
            return ids.Count == 0
                ? (null, ApiError.BadRequest("prompt is an empty list.", "prompt"))
                : (new CompletionRequest(sampling!, null, ids), null);
        }
    }

    private static (SamplingRequest?, ApiError?) ParseSampling(JsonElement root, bool chat)
    {
        if (root.ValueKind != JsonValueKind.Object) return (null, ApiError.BadRequest("the request body must be a JSON object."));
        if (!root.TryGetProperty("model", out var modelElement) || modelElement.ValueKind != JsonValueKind.String || modelElement.GetString()!.Length == 0)
            return (null, ApiError.BadRequest("you must provide a model parameter.", "model"));

        int? maxTokens = null;
        foreach (var name in chat ? new[] { "max_completion_tokens", "max_tokens" } : ["max_tokens"])
        {
            if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) continue;
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int v) || v < 1)
                return (null, ApiError.BadRequest($"{name} must be an integer of at least 1.", name));
            maxTokens = v;
            break;
        }

        if (Number(root, "temperature", double.NaN, 0, 2, out double temperature) is { } e1) return (null, e1);
        if (Number(root, "top_p", double.NaN, 0, 1, out double topP) is { } e2) return (null, e2);
        if (topP == 0) return (null, ApiError.BadRequest("top_p must be greater than 0.", "top_p"));
        if (Number(root, "min_p", 0, 0, 1, out double minP) is { } eMinP) return (null, eMinP);
        if (Number(root, "presence_penalty", 0, -2, 2, out double presence) is { } e3) return (null, e3);
        if (Number(root, "frequency_penalty", 0, -2, 2, out double frequency) is { } e3b) return (null, e3b);
        if (Number(root, "repetition_penalty", double.NaN, 0, 10, out double repetition) is { } e3c) return (null, e3c);
        if (repetition == 0) return (null, ApiError.BadRequest("repetition_penalty must be greater than 0 (1: off).", "repetition_penalty"));

        int? topK = null;
        if (root.TryGetProperty("top_k", out var k) && k.ValueKind != JsonValueKind.Null)
        {
            if (k.ValueKind != JsonValueKind.Number || !k.TryGetInt32(out int kv) || kv < -1)
                return (null, ApiError.BadRequest("top_k must be an integer >= -1 (-1 or 0: no cut).", "top_k"));
            topK = Math.Max(0, kv);
        }

        ulong? seed = null;
        if (root.TryGetProperty("seed", out var s) && s.ValueKind != JsonValueKind.Null)
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out long sv))
                return (null, ApiError.BadRequest("seed must be an integer.", "seed"));
            seed = unchecked((ulong)sv);
        }

        foreach (var (name, isNeutral, hint) in NotHonoured)
        {
            if (root.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null && !isNeutral(value))
                return (null, ApiError.BadRequest($"{name} is not supported yet; {hint}.", name));
        }

        int choices = 1;
        if (root.TryGetProperty("n", out var n) && n.ValueKind != JsonValueKind.Null
            && (n.ValueKind != JsonValueKind.Number || !n.TryGetInt32(out choices) || choices < 1 || choices > MaxChoices))
            return (null, ApiError.BadRequest($"n must be an integer between 1 and {MaxChoices}; send several requests for more choices.", "n"));

        var (logprobs, logprobsError) = chat ? ChatLogprobs(root) : CompletionLogprobs(root);
        if (logprobsError is not null) return (null, logprobsError);

        var stop = new List<string>();
        if (root.TryGetProperty("stop", out var st) && st.ValueKind != JsonValueKind.Null)
        {
            if (st.ValueKind == JsonValueKind.String) stop.Add(st.GetString()!);
            else if (st.ValueKind == JsonValueKind.Array && st.GetArrayLength() <= 4 && st.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String))
                stop.AddRange(st.EnumerateArray().Select(x => x.GetString()!));
            else return (null, ApiError.BadRequest("stop must be a string or a list of at most 4 strings.", "stop"));
            if (stop.Any(x => x.Length == 0)) return (null, ApiError.BadRequest("stop strings must not be empty.", "stop"));
        }

        var logitBias = new Dictionary<int, float>();
        if (root.TryGetProperty("logit_bias", out var lb) && lb.ValueKind != JsonValueKind.Null)
        {
            if (lb.ValueKind != JsonValueKind.Object)
                return (null, ApiError.BadRequest("logit_bias must map token ids to numbers in [-100, 100].", "logit_bias"));
            foreach (var entry in lb.EnumerateObject())
            {
                if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id)
                    || entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetDouble(out double bias) || !(bias is >= -100 and <= 100))
                    return (null, ApiError.BadRequest($"logit_bias must map token ids to numbers in [-100, 100]; '{entry.Name}' does not.", "logit_bias"));
                logitBias[id] = (float)bias;
            }
        }

        var stopTokenIds = new List<int>();
        if (root.TryGetProperty("stop_token_ids", out var sti) && sti.ValueKind != JsonValueKind.Null)
        {
            if (sti.ValueKind != JsonValueKind.Array)
                return (null, ApiError.BadRequest("stop_token_ids must be a list of token ids.", "stop_token_ids"));
            foreach (var e in sti.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0)
                    return (null, ApiError.BadRequest("stop_token_ids must be non-negative integers.", "stop_token_ids"));
                stopTokenIds.Add(id);
            }
        }

        if (Bool(root, "stream", out bool stream) is { } e4) return (null, e4);
        if (Bool(root, "ignore_eos", out bool ignoreEos) is { } e5) return (null, e5);
        bool includeUsage = false;
        if (root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object)
        {
            if (Bool(so, "include_usage", out includeUsage) is { } e6) return (null, e6 with { Param = "stream_options.include_usage" });
        }
        else if (so.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
        {
            return (null, ApiError.BadRequest("stream_options must be an object.", "stream_options"));
        }

        return (new SamplingRequest(modelElement.GetString()!, maxTokens, double.IsNaN(temperature) ? null : temperature, double.IsNaN(topP) ? null : topP,
            topK, seed, stop, stream, includeUsage, ignoreEos) { N = choices, Logprobs = logprobs, StopTokenIds = stopTokenIds, LogitBias = logitBias, MinP = minP, PresencePenalty = presence, FrequencyPenalty = frequency,
            RepetitionPenalty = double.IsNaN(repetition) ? null : repetition }, null);
    }

    /// <summary>Parameters of OpenAI's and vLLM's APIs that this router does not honour yet, each with its neutral value.</summary>
    private static readonly (string Name, Func<JsonElement, bool> IsNeutral, string Hint)[] NotHonoured =
    [
        ("min_tokens", e => IsNumber(e, 0), "leave it at 0"),
        ("response_format", e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "text",
            "only {\"type\":\"text\"} is served"),
        ("guided_json", _ => false, "remove it"),
        ("guided_regex", _ => false, "remove it"),
        ("guided_choice", _ => false, "remove it"),
        ("guided_grammar", _ => false, "remove it"),
    ];

    /// <summary>Completions: <c>logprobs</c> is the number of alternatives per token (0..20); null or false: none.</summary>
    private static (int?, ApiError?) CompletionLogprobs(JsonElement root)
    {
        if (!root.TryGetProperty("logprobs", out var e) || e.ValueKind is JsonValueKind.Null or JsonValueKind.False) return (null, null);
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int k) || k < 0 || k > MaxLogprobs)
            return (null, ApiError.BadRequest($"logprobs must be an integer between 0 and {MaxLogprobs} (the number of most likely tokens returned with each token).", "logprobs"));
        return (k, null);
    }

    /// <summary>Chat: <c>logprobs</c> true turns them on; <c>top_logprobs</c> (0..20) adds alternatives and needs logprobs true.</summary>
    private static (int?, ApiError?) ChatLogprobs(JsonElement root)
    {
        if (Bool(root, "logprobs", out bool on) is { } error) return (null, error);
        if (!root.TryGetProperty("top_logprobs", out var top) || top.ValueKind == JsonValueKind.Null) return (on ? 0 : null, null);
        if (top.ValueKind != JsonValueKind.Number || !top.TryGetInt32(out int k) || k < 0 || k > MaxLogprobs)
            return (null, ApiError.BadRequest($"top_logprobs must be an integer between 0 and {MaxLogprobs}.", "top_logprobs"));
        if (!on) return (null, ApiError.BadRequest("top_logprobs needs logprobs set to true; add \"logprobs\": true.", "top_logprobs"));
        return (k, null);
    }

    private static bool IsNumber(JsonElement e, double neutral) => e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double v) && v == neutral;

    private static ApiError? Number(JsonElement root, string name, double fallback, double min, double max, out double value)
    {
        value = fallback;
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out value) || !double.IsFinite(value))
            return ApiError.BadRequest($"{name} must be a finite number.", name);
        if (value < min || value > max)
            return ApiError.BadRequest($"{name} is {value}; it must be between {min} and {max}.", name);
        return null;
    }

    private static ApiError? Bool(JsonElement root, string name, out bool value)
    {
        value = false;
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) return ApiError.BadRequest($"{name} must be true or false.", name);
        value = e.GetBoolean();
        return null;
    }
}
