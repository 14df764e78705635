// Chat prompts from the model's own Jinja chat_template, rendered by our interpreter
// (Platform.Core.Templating) with the variables Hugging Face transformers passes: messages,
// add_generation_prompt, the tokenizer's special tokens (bos_token, eos_token, ...), and tools and
// documents (None when the request has none). Where the template comes from, first found wins:
// an explicit file (--chat-template, vLLM's flag), tokenizer_config.json's chat_template,
// chat_template.jinja, chat_template.json. A model with none serves completions only.
using System.Text.Json;
using Platform.Core.Templating;

namespace Platform.Core.Tokenization;

/// <summary>One message of a conversation as the template sees it. Content is null only for an assistant
/// message that carries tool calls instead of text (OpenAI sends it so).</summary>
public sealed record ChatMessage(string Role, string? Content)
{
    /// <summary>The author's name (OpenAI's optional name field), or a tool message's function name.</summary>
    public string? Name { get; init; }

    /// <summary>A tool message: the id of the assistant's tool call it answers.</summary>
    public string? ToolCallId { get; init; }

    /// <summary>An assistant message: the functions it called.</summary>
    public IReadOnlyList<ChatToolCall> ToolCalls { get; init; } = [];
}

/// <summary>A function call made by the assistant. Arguments is the JSON text as the client sent it.</summary>
public sealed record ChatToolCall(string Id, string Name, string Arguments);

/// <summary>What a request adds to its messages: tool definitions, documents (retrieval context) and extra template
/// variables (vLLM's chat_template_kwargs, e.g. enable_thinking), all JSON as the request carried them.</summary>
public sealed record ChatTemplateInputs(JsonElement? Tools = null, JsonElement? Documents = null, IReadOnlyDictionary<string, JsonElement>? Variables = null)
{
    public static readonly ChatTemplateInputs None = new();

    /// <summary>Variables a request may not set through chat_template_kwargs: the ones the renderer itself supplies.</summary>
    public static readonly IReadOnlySet<string> Reserved = new HashSet<string>(StringComparer.Ordinal) { "messages", "add_generation_prompt", "tools", "documents" };
}

public interface IChatTemplate
{
    /// <summary>Where the template came from, e.g. "tokenizer_config.json" or a file path.</summary>
    string Name { get; }

    /// <exception cref="ChatTemplateRenderException">The template rejected the conversation (raise_exception) or failed on it.</exception>
    string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateInputs? inputs = null);
}

/// <summary>The chat template cannot be loaded (an explicit template file is missing, unreadable or not valid Jinja).</summary>
public sealed class ChatTemplateException : ModelLoadException
{
    public ChatTemplateException(string message)
        : base(message)
    {
    }
}

/// <summary>Rendering failed for this conversation: a client error (400), not a server fault.</summary>
public sealed class ChatTemplateRenderException : Exception
{
    public ChatTemplateRenderException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>True when the template itself refused the conversation with raise_exception (e.g. roles must alternate).</summary>
    public bool RaisedByTemplate => InnerException is TemplateRaisedException;
}

/// <summary>A model's Jinja chat template, parsed once.</summary>
public sealed class JinjaChatTemplate : IChatTemplate
{
    private readonly JinjaTemplate _template;
    private readonly IReadOnlyDictionary<string, object?> _specialTokens;
    private readonly TimeProvider _clock;

    /// <param name="source">The Jinja text.</param>
    /// <param name="name">Where it came from, for messages.</param>
    /// <param name="specialTokens">bos_token, eos_token, ... as the template sees them (absent ones are undefined).</param>
    /// <exception cref="TemplateSyntaxException">The text is not valid Jinja, or uses a statement the interpreter lacks.</exception>
    public JinjaChatTemplate(string source, string name, IReadOnlyDictionary<string, string> specialTokens, TimeProvider? clock = null)
    {
        _template = JinjaTemplate.Parse(source);
        Name = name;
        _specialTokens = specialTokens.ToDictionary(kv => kv.Key, kv => (object?)kv.Value, StringComparer.Ordinal);
        _clock = clock ?? TimeProvider.System;
    }

    public string Name { get; }

    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, ChatTemplateInputs? inputs = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        inputs ??= ChatTemplateInputs.None;
        var list = messages.Select(m => (object?)AsTemplateValue(m)).ToList();
        var extra = inputs.Variables?.ToDictionary(kv => kv.Key, kv => (object?)kv.Value, StringComparer.Ordinal);
        return Render(list, addGenerationPrompt, inputs.Tools is { } t ? Values.FromJson(t) : null,
            inputs.Documents is { } d ? Values.FromJson(d) : null, extra);
    }

    /// <summary>
    /// A message as transformers' templates expect it: role and content, then name, tool_call_id and tool_calls
    /// when present. A tool call's arguments are given as a mapping when they are a JSON object (as vLLM does:
    /// templates such as Llama-3.1's and Qwen2.5's write them with tojson), else as the text the client sent.
    /// </summary>
    private static Dictionary<string, object?> AsTemplateValue(ChatMessage m)
    {
        var value = new Dictionary<string, object?>(StringComparer.Ordinal) { ["role"] = m.Role, ["content"] = m.Content };
        if (m.Name is not null) value["name"] = m.Name;
        if (m.ToolCallId is not null) value["tool_call_id"] = m.ToolCallId;
        if (m.ToolCalls.Count > 0)
        {
            value["tool_calls"] = m.ToolCalls.Select(c => (object?)new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["id"] = c.Id,
                ["type"] = "function",
                ["function"] = new Dictionary<string, object?>(StringComparer.Ordinal) { ["name"] = c.Name, ["arguments"] = ArgumentsValue(c.Arguments) },
            }).ToList();
        }

        return value;
    }

    private static object? ArgumentsValue(string arguments)
    {
        try
        {
            using var doc = JsonDocument.Parse(arguments);
            return doc.RootElement.ValueKind == JsonValueKind.Object ? Values.FromJson(doc.RootElement) : arguments;
        }
        catch (JsonException)
        {
            return arguments;
        }
    }

    /// <summary>Renders JSON messages as a request carries them (tool_calls, name, content parts...), with optional tools and documents.</summary>
    public string Render(JsonElement messages, bool addGenerationPrompt, JsonElement? tools = null, JsonElement? documents = null,
        IReadOnlyDictionary<string, object?>? extraVariables = null) =>
        Render(Values.FromJson(messages), addGenerationPrompt, tools is { } t ? Values.FromJson(t) : null,
            documents is { } d ? Values.FromJson(d) : null, extraVariables);

    private string Render(object? messages, bool addGenerationPrompt, object? tools, object? documents, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var variables = new Dictionary<string, object?>(_specialTokens, StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = tools,
            ["documents"] = documents,
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, object?>())
        {
            variables[k] = v is JsonElement e ? Values.FromJson(e) : v;
        }

        try
        {
            return _template.Render(variables, _clock);
        }
        catch (TemplateRaisedException ex)
        {
            throw new ChatTemplateRenderException($"the model's chat template rejected the conversation: {ex.Message}", ex);
        }
        catch (TemplateRenderException ex)
        {
            throw new ChatTemplateRenderException($"the model's chat template ({Name}) failed on this conversation: {ex.Message}", ex);
        }
    }
}

public static class ChatTemplates
{
    /// <summary>Special tokens the template sees, as transformers' special_tokens_map gives them.</summary>
    public static IReadOnlyDictionary<string, string> SpecialTokens(HfTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (tokenizer.BosTokenId is int bos && tokenizer.IdToToken(bos) is { } bosText)
        {
            map["bos_token"] = bosText;
        }

        if (tokenizer.EosTokenId is int eos && tokenizer.IdToToken(eos) is { } eosText)
        {
            map["eos_token"] = eosText;
        }

        foreach (var (name, text) in tokenizer.OtherSpecialTokens)
        {
            map.TryAdd(name, text);
        }

        return map;
    }

    /// <summary>
    /// The chat template for a model: <paramref name="overridePath"/> when given (a file, or the template text itself
    /// as vLLM's --chat-template accepts), else the tokenizer's own. Null with a reason when the model has none or its
    /// own template is not valid Jinja: chat requests then get a 400 that says so, completions still work.
    /// </summary>
    /// <exception cref="ChatTemplateException">The override cannot be read or parsed (fix the flag).</exception>
    public static (IChatTemplate? Template, string? Problem) Load(HfTokenizer tokenizer, string? overridePath, TimeProvider? clock = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var tokens = SpecialTokens(tokenizer);
        if (overridePath is not null)
        {
            string source;
            if (File.Exists(overridePath))
            {
                source = ReadTemplateFile(overridePath);
            }
            else if (overridePath.Contains("{{", StringComparison.Ordinal) || overridePath.Contains("{%", StringComparison.Ordinal))
            {
                source = overridePath;
            }
            else
            {
                throw new ChatTemplateException($"--chat-template: the file '{overridePath}' does not exist. Pass a Jinja file (or chat_template.json), or the template text itself.");
            }

            try
            {
                return (new JinjaChatTemplate(source, File.Exists(overridePath) ? overridePath : "--chat-template", tokens, clock), null);
            }
            catch (TemplateSyntaxException ex)
            {
                throw new ChatTemplateException($"--chat-template: '{overridePath}' is not a valid chat template: {ex.Message}");
            }
        }

        if (tokenizer.ChatTemplate is not { } own)
        {
            return (null, "this model has no chat template (tokenizer_config.json has no chat_template, and there is no chat_template.jinja or chat_template.json), " +
                          "so only /v1/completions is served. Send a plain prompt to /v1/completions, or start the router with --chat-template FILE.");
        }

        try
        {
            return (new JinjaChatTemplate(own, tokenizer.ChatTemplateSource ?? "tokenizer_config.json", tokens, clock), null);
        }
        catch (TemplateSyntaxException ex)
        {
            return (null, $"this model's chat template ({tokenizer.ChatTemplateSource}) cannot be used: {ex.Message}. " +
                          "Start the router with --chat-template FILE to use another one; /v1/completions still works.");
        }
    }

    /// <summary>A template file: Jinja text, or a chat_template.json ({"chat_template": "..."}).</summary>
    internal static string ReadTemplateFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ChatTemplateException($"cannot read the chat template '{path}': {ex.Message}");
        }

        if (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            return text;
        }

        try
        {
            using var doc = JsonDocument.Parse(text);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String)
            {
                return t.GetString()!;
            }
        }
        catch (JsonException ex)
        {
            throw new ChatTemplateException($"the chat template file '{path}' is not valid JSON: {ex.Message}");
        }

        throw new ChatTemplateException($"the chat template file '{path}' has no \"chat_template\" string.");
    }
}
