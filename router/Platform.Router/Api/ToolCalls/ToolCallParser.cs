// Tool calls from a model's text. A model that was shown tools answers either in prose or with calls
// written in its own format (Hermes/Qwen: <tool_call>{json}</tool_call>; Llama-3.1/3.2: a bare JSON
// object, optionally after <|python_tag|>). The router is told which format its model speaks
// (--tool-call-parser, vLLM's flag and names) and turns such text into OpenAI's tool_calls. While
// streaming, text that cannot be part of a call goes out as content at once; from the point where a
// call may begin it is held back and parsed when the generation ends. Text that looked like a call
// but does not parse is returned as content: nothing the model wrote is dropped.
using System.Text.Json;

namespace Platform.Router.Api.ToolCalls;

/// <summary>A function call the model made: Arguments is JSON text (an object), as OpenAI sends it.</summary>
public sealed record ParsedToolCall(string Id, string Name, string Arguments);

/// <summary>The model's reply split into prose (null when there is none) and calls.</summary>
public sealed record ParsedReply(string? Content, IReadOnlyList<ParsedToolCall> Calls);

public abstract class ToolCallParser
{
    /// <summary>The names --tool-call-parser accepts (vLLM's).</summary>
    public static IReadOnlyList<string> Names { get; } = ["hermes", "llama3_json"];

    /// <summary>The parser for a --tool-call-parser value; null when the name is unknown.</summary>
    public static ToolCallParser? Create(string name) => name switch
    {
        "hermes" => new HermesToolCallParser(),
        "llama3_json" => new Llama3JsonToolCallParser(),
        _ => null,
    };

    public abstract string Name { get; }

    /// <summary>The whole reply, parsed. No calls: Content is the text unchanged.</summary>
    public abstract ParsedReply Parse(string text);

    /// <summary>How many leading characters of a reply still being generated are surely prose, whatever follows.</summary>
    public abstract int SettledContentLength(string textSoFar);

    /// <summary>A call from a JSON object with a name and arguments (or parameters, as Llama-3.1 writes); null if it is not one.</summary>
    protected static ParsedToolCall? CallFromJson(JsonElement call)
    {
        if (call.ValueKind != JsonValueKind.Object || !call.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
            || name.GetString()!.Length == 0)
            return null;
        JsonElement arguments = default;
        bool has = call.TryGetProperty("arguments", out arguments) || call.TryGetProperty("parameters", out arguments);
        string text = !has || arguments.ValueKind == JsonValueKind.Null ? "{}"
            : arguments.ValueKind == JsonValueKind.Object ? arguments.GetRawText()
            // Some models write the arguments as a JSON string holding the object.
            : arguments.ValueKind == JsonValueKind.String && IsJsonObject(arguments.GetString()!) ? arguments.GetString()!
            : "";
        return text.Length == 0 ? null : new ParsedToolCall(NewCallId(), name.GetString()!, text);
    }

    private static bool IsJsonObject(string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>vLLM's id shape, so clients that inspect it see what they know.</summary>
    protected static string NewCallId() => "chatcmpl-tool-" + Guid.NewGuid().ToString("n");

    /// <summary>How many characters at the end of <paramref name="text"/> could be the start of <paramref name="marker"/>.</summary>
    protected static int PartialMarkerAtEnd(string text, string marker)
    {
        for (int n = Math.Min(marker.Length - 1, text.Length); n > 0; n--)
        {
            if (text.AsSpan(text.Length - n).SequenceEqual(marker.AsSpan(0, n))) return n;
        }
        return 0;
    }
}

/// <summary>Hermes' format, used by Qwen2.5, Qwen3, Hermes and others: each call is
/// <c>&lt;tool_call&gt;{"name": ..., "arguments": {...}}&lt;/tool_call&gt;</c>, after any prose.
/// A last call cut off by the end of generation before its closing tag is still read if its JSON is whole.</summary>
public sealed class HermesToolCallParser : ToolCallParser
{
    private const string Open = "<tool_call>";
    private const string Close = "</tool_call>";

    public override string Name => "hermes";

    public override ParsedReply Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int first = text.IndexOf(Open, StringComparison.Ordinal);
        if (first < 0) return new ParsedReply(text, []);
        var calls = new List<ParsedToolCall>();
        int at = first;
        while (at >= 0 && at < text.Length)
        {
            int bodyStart = at + Open.Length;
            int close = text.IndexOf(Close, bodyStart, StringComparison.Ordinal);
            string body = close < 0 ? text[bodyStart..] : text[bodyStart..close];
            if (ParseObject(body.Trim()) is not { } call) return new ParsedReply(text, []);
            calls.Add(call);
            if (close < 0) break;
            int next = close + Close.Length;
            at = text.IndexOf(Open, next, StringComparison.Ordinal);
            // Only whitespace may sit between calls; anything else means this was not a tool-call reply.
            if ((at < 0 ? text[next..] : text[next..at]).Trim().Length > 0) return new ParsedReply(text, []);
        }
        string prose = text[..first];
        return new ParsedReply(prose.Trim().Length == 0 ? null : prose, calls);
    }

    public override int SettledContentLength(string textSoFar)
    {
        ArgumentNullException.ThrowIfNull(textSoFar);
        int open = textSoFar.IndexOf(Open, StringComparison.Ordinal);
        return open >= 0 ? open : textSoFar.Length - PartialMarkerAtEnd(textSoFar, Open);
    }

    private static ParsedToolCall? ParseObject(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            return CallFromJson(doc.RootElement);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>Llama-3.1/3.2's JSON format: the reply is a JSON object {"name": ..., "parameters": {...}} (or several
/// separated by ';'), possibly after &lt;|python_tag|&gt;. A reply that starts with anything else is prose.</summary>
public sealed class Llama3JsonToolCallParser : ToolCallParser
{
    private const string PythonTag = "<|python_tag|>";

    public override string Name => "llama3_json";

    public override ParsedReply Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string rest = text.TrimStart();
        if (rest.StartsWith(PythonTag, StringComparison.Ordinal)) rest = rest[PythonTag.Length..].TrimStart();
        if (!rest.StartsWith('{')) return new ParsedReply(text, []);
        var calls = new List<ParsedToolCall>();
        var bytes = System.Text.Encoding.UTF8.GetBytes(rest);
        int offset = 0;
        while (true)
        {
            var reader = new Utf8JsonReader(bytes.AsSpan(offset), new JsonReaderOptions { AllowTrailingCommas = false });
            ParsedToolCall? call;
            try
            {
                if (!JsonDocument.TryParseValue(ref reader, out var doc)) return new ParsedReply(text, []);
                using (doc) call = CallFromJson(doc.RootElement);
            }
            catch (JsonException)
            {
                return new ParsedReply(text, []);
            }
            if (call is null) return new ParsedReply(text, []);
            calls.Add(call);
            offset += (int)reader.BytesConsumed;
            while (offset < bytes.Length && (bytes[offset] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')) offset++;
            if (offset == bytes.Length) break;
            if (bytes[offset] != (byte)';') return new ParsedReply(text, []);
            offset++;
            while (offset < bytes.Length && (bytes[offset] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')) offset++;
            if (offset == bytes.Length) break;
        }
        return new ParsedReply(null, calls);
    }

    public override int SettledContentLength(string textSoFar)
    {
        ArgumentNullException.ThrowIfNull(textSoFar);
        string start = textSoFar.TrimStart();
        if (start.Length == 0) return 0;
        // A call is the whole reply: until the first character decides, nothing is settled.
        if (start.StartsWith('{') || start.StartsWith(PythonTag, StringComparison.Ordinal) || PythonTag.StartsWith(start, StringComparison.Ordinal)) return 0;
        return textSoFar.Length;
    }
}
