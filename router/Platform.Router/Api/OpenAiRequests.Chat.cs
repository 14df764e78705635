// Parsing chat requests: messages (system, user, assistant with tool calls, tool results), and what
// else the model's chat template is given — tools, documents and vLLM's chat_template_kwargs — plus
// tool_choice. Everything is checked here and refused with a 400 naming the field; what the template
// does with it is the template's business (it may refuse the conversation too).
using System.Text.Json;
using Platform.Core.Tokenization;

namespace Platform.Router.Api;

/// <summary>How the model may use the request's tools (OpenAI's tool_choice). Required and named choices need
/// constrained decoding, which is not served, so they are refused at parsing.</summary>
public enum ToolChoice
{
    /// <summary>The tools are shown to the model, and its output is plain text.</summary>
    None,

    /// <summary>The model decides; its output is parsed for tool calls (needs --tool-call-parser).</summary>
    Auto,
}

public sealed record ChatRequest(SamplingRequest Sampling, IReadOnlyList<ChatMessage> Messages)
{
    /// <summary>tools, documents and chat_template_kwargs, for the template.</summary>
    public ChatTemplateInputs TemplateInputs { get; init; } = ChatTemplateInputs.None;

    public ToolChoice ToolChoice { get; init; } = ToolChoice.None;

    /// <summary>parallel_tool_calls: false keeps only the first call the model makes.</summary>
    public bool ParallelToolCalls { get; init; } = true;

    /// <summary>Characters the template is given, to bound the tokenizer's work before rendering.</summary>
    public long TextLength => Messages.Sum(m => (long)(m.Content?.Length ?? 0) + m.ToolCalls.Sum(c => c.Arguments.Length + c.Name.Length))
        + (TemplateInputs.Tools is { } t ? t.GetRawText().Length : 0) + (TemplateInputs.Documents is { } d ? d.GetRawText().Length : 0);
}

public static partial class OpenAiRequests
{
    public static (ChatRequest? Request, ApiError? Error) ParseChat(JsonElement root)
    {
        var (sampling, error) = ParseSampling(root, chat: true);
        if (error is not null) return (null, error);
        var (messages, messagesError) = ParseMessages(root);
        if (messagesError is not null) return (null, messagesError);
        var (inputs, inputsError) = ParseTemplateInputs(root);
        if (inputsError is not null) return (null, inputsError);

        bool hasTools = inputs!.Tools is not null;
        var choice = hasTools ? ToolChoice.Auto : ToolChoice.None;
        if (root.TryGetProperty("tool_choice", out var tc) && tc.ValueKind != JsonValueKind.Null)
        {
            string? named = tc.ValueKind == JsonValueKind.Object && tc.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object
                && f.TryGetProperty("name", out var fn) && fn.ValueKind == JsonValueKind.String ? fn.GetString() : null;
            switch (tc.ValueKind == JsonValueKind.String ? tc.GetString() : named is not null ? "named" : "?")
            {
                case "none":
                    choice = ToolChoice.None;
                    break;
                case "auto" when hasTools:
                    choice = ToolChoice.Auto;
                    break;
                case "auto" or "required" or "named" when !hasTools:
                    return (null, ApiError.BadRequest("tool_choice needs tools; send the tools the model may call, or leave tool_choice out.", "tool_choice"));
                case "required":
                case "named":
                    return (null, ApiError.BadRequest(
                        $"tool_choice {(named is null ? "\"required\"" : $"naming the function '{named}'")} needs constrained decoding, which this server does not do; send \"auto\" or \"none\".", "tool_choice"));
                default:
                    return (null, ApiError.BadRequest("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}.", "tool_choice"));
            }
        }

        bool parallel = true;
        if (root.TryGetProperty("parallel_tool_calls", out var ptc) && ptc.ValueKind != JsonValueKind.Null)
        {
            if (ptc.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                return (null, ApiError.BadRequest("parallel_tool_calls must be true or false.", "parallel_tool_calls"));
            parallel = ptc.GetBoolean();
        }

        return (new ChatRequest(sampling!, messages!) { TemplateInputs = inputs, ToolChoice = choice, ParallelToolCalls = parallel }, null);
    }

    /// <summary>tools, documents and chat_template_kwargs of a chat request (also of /tokenize).</summary>
    public static (ChatTemplateInputs? Inputs, ApiError? Error) ParseTemplateInputs(JsonElement root)
    {
        JsonElement? tools = null;
        if (root.TryGetProperty("tools", out var t) && t.ValueKind != JsonValueKind.Null)
        {
            if (t.ValueKind != JsonValueKind.Array)
                return (null, ApiError.BadRequest("tools must be a list of {\"type\":\"function\",\"function\":{\"name\":...,\"parameters\":{...}}}.", "tools"));
            int i = 0;
            foreach (var tool in t.EnumerateArray())
            {
                string param = $"tools[{i++}]";
                if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                    return (null, ApiError.BadRequest($"{param} must be an object with \"type\": \"function\" (the only tool type served).", param + ".type"));
                if (!tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                    return (null, ApiError.BadRequest($"{param}.function must be an object with a name, and optionally a description and parameters.", param + ".function"));
                if (!function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString()!.Length == 0)
                    return (null, ApiError.BadRequest($"{param}.function.name must be a non-empty string.", param + ".function.name"));
                if (function.TryGetProperty("description", out var description) && description.ValueKind is not (JsonValueKind.String or JsonValueKind.Null))
                    return (null, ApiError.BadRequest($"{param}.function.description must be a string.", param + ".function.description"));
                if (function.TryGetProperty("parameters", out var parameters) && parameters.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                    return (null, ApiError.BadRequest($"{param}.function.parameters must be a JSON Schema object.", param + ".function.parameters"));
            }
            if (i > 0) tools = t;
        }

        JsonElement? documents = null;
        if (root.TryGetProperty("documents", out var d) && d.ValueKind != JsonValueKind.Null)
        {
            if (d.ValueKind != JsonValueKind.Array || d.EnumerateArray().Any(doc => doc.ValueKind != JsonValueKind.Object))
                return (null, ApiError.BadRequest("documents must be a list of objects, e.g. {\"title\": ..., \"text\": ...}.", "documents"));
            if (d.GetArrayLength() > 0) documents = d;
        }

        Dictionary<string, JsonElement>? variables = null;
        if (root.TryGetProperty("chat_template_kwargs", out var kw) && kw.ValueKind != JsonValueKind.Null)
        {
            if (kw.ValueKind != JsonValueKind.Object)
                return (null, ApiError.BadRequest("chat_template_kwargs must be an object of template variables, e.g. {\"enable_thinking\": false}.", "chat_template_kwargs"));
            variables = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var p in kw.EnumerateObject())
            {
                if (ChatTemplateInputs.Reserved.Contains(p.Name))
                    return (null, ApiError.BadRequest($"chat_template_kwargs.{p.Name} is set from the request itself; send {p.Name} as a request field instead.", "chat_template_kwargs." + p.Name));
                variables[p.Name] = p.Value;
            }
        }

        return (new ChatTemplateInputs(tools, documents, variables), null);
    }

    /// <summary>The <c>messages</c> of a chat request (also of /tokenize): roles, text contents, tool calls and tool results.</summary>
    public static (List<ChatMessage>? Messages, ApiError? Error) ParseMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
            return (null, ApiError.BadRequest("messages must be a list of {role, content} objects.", "messages"));
        if (messages.GetArrayLength() == 0)
            return (null, ApiError.BadRequest("messages is empty; send at least one message.", "messages"));

        var list = new List<ChatMessage>(messages.GetArrayLength());
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            var (message, error) = ParseMessage(m, $"messages[{i++}]");
            if (error is not null) return (null, error);
            list.Add(message!);
        }
        return (list, null);
    }

    private static (ChatMessage?, ApiError?) ParseMessage(JsonElement m, string param)
    {
        if (m.ValueKind != JsonValueKind.Object)
            return (null, ApiError.BadRequest($"{param} must be an object with role and content.", param));
        if (!m.TryGetProperty("role", out var roleElement) || roleElement.ValueKind != JsonValueKind.String)
            return (null, ApiError.BadRequest($"{param}.role must be a string.", param + ".role"));
        string role = roleElement.GetString()!;
        if (role == "developer") role = "system";
        if (role is not ("system" or "user" or "assistant" or "tool"))
            return (null, ApiError.BadRequest($"{param}.role '{role}' is not supported; use system, developer, user, assistant or tool.", param + ".role"));

        string? name = null;
        if (m.TryGetProperty("name", out var nameElement) && nameElement.ValueKind != JsonValueKind.Null)
        {
            if (nameElement.ValueKind != JsonValueKind.String) return (null, ApiError.BadRequest($"{param}.name must be a string.", param + ".name"));
            name = nameElement.GetString();
        }

        var toolCalls = new List<ChatToolCall>();
        if (m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind != JsonValueKind.Null)
        {
            if (role != "assistant") return (null, ApiError.BadRequest($"{param}.tool_calls: only assistant messages carry tool calls.", param + ".tool_calls"));
            if (calls.ValueKind != JsonValueKind.Array)
                return (null, ApiError.BadRequest($"{param}.tool_calls must be a list of {{id, type, function: {{name, arguments}}}}.", param + ".tool_calls"));
            int j = 0;
            foreach (var call in calls.EnumerateArray())
            {
                var (toolCall, callError) = ParseToolCall(call, $"{param}.tool_calls[{j++}]");
                if (callError is not null) return (null, callError);
                toolCalls.Add(toolCall!);
            }
        }

        string? toolCallId = null;
        if (role == "tool")
        {
            if (!m.TryGetProperty("tool_call_id", out var idElement) || idElement.ValueKind != JsonValueKind.String)
                return (null, ApiError.BadRequest($"{param}.tool_call_id must be the id of the tool call this message answers.", param + ".tool_call_id"));
            toolCallId = idElement.GetString();
        }

        if (!m.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
        {
            if (role != "assistant") return (null, ApiError.BadRequest($"{param}.content is missing.", param + ".content"));
            // An assistant turn that only called tools has no content; one with neither is an empty reply.
            return (new ChatMessage(role, toolCalls.Count > 0 ? null : "") { Name = name, ToolCalls = toolCalls }, null);
        }
        string text;
        if (content.ValueKind == JsonValueKind.String) text = content.GetString()!;
        else if (content.ValueKind != JsonValueKind.Array)
            return (null, ApiError.BadRequest($"{param}.content must be a string or a list of text parts.", param + ".content"));
        else
        {
            var joined = new System.Text.StringBuilder();
            foreach (var part in content.EnumerateArray())
            {
                if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.GetString() != "text"
                    || !part.TryGetProperty("text", out var partText) || partText.ValueKind != JsonValueKind.String)
                    return (null, ApiError.BadRequest($"{param}.content: only text parts ({{\"type\":\"text\",\"text\":...}}) are supported.", param + ".content"));
                joined.Append(partText.GetString());
            }
            text = joined.ToString();
        }
        return (new ChatMessage(role, text) { Name = name, ToolCallId = toolCallId, ToolCalls = toolCalls }, null);
    }

    private static (ChatToolCall?, ApiError?) ParseToolCall(JsonElement call, string param)
    {
        if (call.ValueKind != JsonValueKind.Object)
            return (null, ApiError.BadRequest($"{param} must be an object {{id, type, function: {{name, arguments}}}}.", param));
        if (call.TryGetProperty("type", out var type) && type.ValueKind != JsonValueKind.Null && (type.ValueKind != JsonValueKind.String || type.GetString() != "function"))
            return (null, ApiError.BadRequest($"{param}.type must be \"function\".", param + ".type"));
        string id = call.TryGetProperty("id", out var idElement) && idElement.ValueKind == JsonValueKind.String ? idElement.GetString()! : "";
        if (!call.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object
            || !function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString()!.Length == 0)
            return (null, ApiError.BadRequest($"{param}.function.name must be a non-empty string.", param + ".function.name"));
        // OpenAI sends arguments as JSON text; some clients send the object itself.
        string arguments = !function.TryGetProperty("arguments", out var args) || args.ValueKind == JsonValueKind.Null ? "{}"
            : args.ValueKind == JsonValueKind.String ? args.GetString()!
            : args.ValueKind == JsonValueKind.Object ? args.GetRawText()
            : "";
        if (arguments.Length == 0)
            return (null, ApiError.BadRequest($"{param}.function.arguments must be a JSON object, as text.", param + ".function.arguments"));
        return (new ChatToolCall(id, name.GetString()!, arguments), null);
    }
}
