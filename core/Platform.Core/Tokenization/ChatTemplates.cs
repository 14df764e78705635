// Chat prompt rendering for the two families we serve first: Llama-3 headers (3.0 and the 3.1+
// knowledge-date variant) and ChatML (Qwen2/2.5, with their default system prompt). These are
// hand-written equivalents of the families' Jinja templates for plain conversations (no tools);
// Resolve picks one by looking at the model's raw chat_template, then at config.json's model_type.
// A Jinja interpreter for arbitrary templates is a later step; until then unknown templates fail
// loudly here.
using System.Text;
using System.Text.RegularExpressions;

namespace Platform.Core.Tokenization;

public sealed record ChatMessage(string Role, string Content);

public interface IChatTemplate
{
    string Name { get; }

    string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt);
}

/// <summary>No supported chat template family fits the model.</summary>
public sealed class ChatTemplateException : ModelLoadException
{
    public ChatTemplateException(string message)
        : base(message)
    {
    }
}

/// <summary>
/// Llama-3 Instruct: BOS, then per message "&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n" + trimmed
/// content + "&lt;|eot_id|&gt;" (the official template applies Jinja's trim to the content).
/// With a date (Llama-3.1 and later) the conversation always opens with a system turn that starts
/// "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n" followed by the (trimmed) system
/// message, as the 3.1+ templates do when no tools are given.
/// </summary>
public sealed class Llama3ChatTemplate : IChatTemplate
{
    private readonly string _bosToken;
    private readonly Func<string>? _todayDate;

    /// <param name="bosToken">The BOS token text.</param>
    /// <param name="todayDate">For Llama-3.1+ templates: the "Today Date" text, e.g. "26 Jul 2024"; null for Llama-3.</param>
    public Llama3ChatTemplate(string bosToken = "<|begin_of_text|>", Func<string>? todayDate = null)
    {
        _bosToken = bosToken;
        _todayDate = todayDate;
    }

    public string Name => _todayDate is null ? "llama3" : "llama3.1";

    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var sb = new StringBuilder();
        var first = 0;
        if (_todayDate is not null)
        {
            var system = messages.Count > 0 && messages[0].Role == "system" ? JinjaTrim(messages[0].Content) : "";
            first = messages.Count > 0 && messages[0].Role == "system" ? 1 : 0;
            sb.Append(_bosToken)
              .Append("<|start_header_id|>system<|end_header_id|>\n\n")
              .Append("Cutting Knowledge Date: December 2023\n")
              .Append("Today Date: ").Append(_todayDate()).Append("\n\n")
              .Append(system).Append("<|eot_id|>");
        }
        else if (messages.Count > 0)
        {
            // The Llama-3 template prepends BOS to the first message, so an empty conversation has none.
            sb.Append(_bosToken);
        }

        for (var i = first; i < messages.Count; i++)
        {
            sb.Append("<|start_header_id|>").Append(messages[i].Role).Append("<|end_header_id|>\n\n")
              .Append(JinjaTrim(messages[i].Content)).Append("<|eot_id|>");
        }

        if (addGenerationPrompt)
        {
            sb.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
        }

        return sb.ToString();
    }

    // Jinja's trim is Python's str.strip(): Unicode whitespace at both ends.
    private static string JinjaTrim(string s) => s.Trim();
}

/// <summary>
/// ChatML: per message "&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n". Qwen2's template adds a default
/// system message when the conversation does not start with one; pass it as defaultSystemPrompt.
/// </summary>
public sealed class ChatMlChatTemplate : IChatTemplate
{
    private readonly string? _defaultSystemPrompt;

    public ChatMlChatTemplate(string? defaultSystemPrompt = null)
    {
        _defaultSystemPrompt = defaultSystemPrompt;
    }

    public string Name => "chatml";

    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var sb = new StringBuilder();
        if (_defaultSystemPrompt is not null && messages.Count > 0 && messages[0].Role != "system")
        {
            Append(sb, "system", _defaultSystemPrompt);
        }

        foreach (var m in messages)
        {
            Append(sb, m.Role, m.Content);
        }

        if (addGenerationPrompt)
        {
            sb.Append("<|im_start|>assistant\n");
        }

        return sb.ToString();
    }

    private static void Append(StringBuilder sb, string role, string content) =>
        sb.Append("<|im_start|>").Append(role).Append('\n').Append(content).Append("<|im_end|>\n");
}

public static class ChatTemplates
{
    private const string Supported = "supported families: llama3 (Llama-3 and 3.1+ header tokens) and chatml (<|im_start|>/<|im_end|>, e.g. Qwen2)";

    // A complete system turn written as a literal in the template is the default system prompt that Qwen2
    // ('You are a helpful assistant.') and Qwen2.5 ('You are Qwen, created by Alibaba Cloud. ...') insert
    // when the conversation has no system message: {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}.
    private static readonly Regex QwenDefaultSystem = new(
        @"'<\|im_start\|>system\\n(?<prompt>[^'\\]+)<\|im_end\|>\\n'",
        RegexOptions.CultureInvariant);

    private static readonly Regex DefaultDate = new(@"set\s+date_string\s*=\s*[""'](?<date>[^""']+)[""']", RegexOptions.CultureInvariant);

    /// <summary>Picks the template family for a model.</summary>
    /// <param name="rawTemplate">tokenizer_config.json's chat_template, if any.</param>
    /// <param name="modelType">config.json's model_type, e.g. "llama", "mistral", "qwen2".</param>
    /// <param name="tokenizer">The model's tokenizer: the family's special tokens must be in its vocabulary.</param>
    /// <param name="timeProvider">Clock for templates that print today's date (Llama-3.2's strftime_now); system clock when null.</param>
    /// <exception cref="ChatTemplateException">No supported family fits; the message lists the supported ones.</exception>
    public static IChatTemplate Resolve(string? rawTemplate, string modelType, HfTokenizer tokenizer, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (rawTemplate is not null)
        {
            if (rawTemplate.Contains("<|start_header_id|>", StringComparison.Ordinal))
            {
                return Llama3(tokenizer, TodayDate(rawTemplate, timeProvider ?? TimeProvider.System)) ?? throw new ChatTemplateException(
                    "The chat_template uses Llama-3 header tokens, but the vocabulary lacks <|start_header_id|>, <|end_header_id|> or <|eot_id|>; the tokenizer and template do not match.");
            }

            if (rawTemplate.Contains("<|im_start|>", StringComparison.Ordinal))
            {
                var m = QwenDefaultSystem.Match(rawTemplate);
                return ChatMl(tokenizer, m.Success ? m.Groups["prompt"].Value : null) ?? throw new ChatTemplateException(
                    "The chat_template uses ChatML, but the vocabulary lacks <|im_start|> or <|im_end|>; the tokenizer and template do not match.");
            }
        }

        IChatTemplate? byModelType = modelType switch
        {
            "llama" or "mistral" => Llama3(tokenizer, todayDate: null),
            "qwen2" => ChatMl(tokenizer, null),
            _ => null,
        };
        return byModelType ?? throw new ChatTemplateException(
            $"No supported chat template for model_type '{modelType}'" +
            (rawTemplate is null ? " (tokenizer_config.json has no chat_template)" : " (its chat_template is neither Llama-3 nor ChatML)") +
            $"; {Supported}. Use a model of a supported family, or send prompts as raw text or token ids.");
    }

    /// <summary>
    /// Llama-3.1+ templates print "Cutting Knowledge Date" and a date: the template's default
    /// (set date_string = "26 Jul 2024"), or today's date when it calls strftime_now (3.2+).
    /// </summary>
    private static Func<string>? TodayDate(string rawTemplate, TimeProvider clock)
    {
        if (!rawTemplate.Contains("Cutting Knowledge Date", StringComparison.Ordinal))
        {
            return null;
        }

        if (rawTemplate.Contains("strftime_now", StringComparison.Ordinal))
        {
            // Python's "%d %b %Y".
            return () => clock.GetUtcNow().ToString("dd MMM yyyy", System.Globalization.CultureInfo.InvariantCulture);
        }

        var m = DefaultDate.Match(rawTemplate);
        var date = m.Success ? m.Groups["date"].Value : "26 Jul 2024";
        return () => date;
    }

    private static Llama3ChatTemplate? Llama3(HfTokenizer tokenizer, Func<string>? todayDate)
    {
        if (tokenizer.TokenToId("<|start_header_id|>") is null || tokenizer.TokenToId("<|end_header_id|>") is null
            || tokenizer.TokenToId("<|eot_id|>") is null)
        {
            return null;
        }

        var bos = tokenizer.BosTokenId is int id ? tokenizer.IdToToken(id)! : "<|begin_of_text|>";
        return tokenizer.TokenToId(bos) is null ? null : new Llama3ChatTemplate(bos, todayDate);
    }

    private static ChatMlChatTemplate? ChatMl(HfTokenizer tokenizer, string? defaultSystemPrompt) =>
        tokenizer.TokenToId("<|im_start|>") is null || tokenizer.TokenToId("<|im_end|>") is null
            ? null
            : new ChatMlChatTemplate(defaultSystemPrompt);
}
