// Rendered prompts must match the families' official Jinja templates character for character.
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class ChatTemplateTests : IClassFixture<SyntheticTokenizerFixture>
{
    // Qwen2-Instruct's template: ChatML plus a default system message.
    private const string Qwen2Template =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are terse."),
        new("user", "What is 2+2?"),
        new("assistant", "4"),
        new("user", "And 3+3?"),
    ];

    private readonly SyntheticTokenizerFixture _fx;

    public ChatTemplateTests(SyntheticTokenizerFixture fx)
    {
        _fx = fx;
    }

    [Fact]
    public void Llama3_renders_the_official_format()
    {
        var t = new Llama3ChatTemplate();

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            t.Render(Conversation, addGenerationPrompt: true));
        // The official template trims message content.
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
            t.Render([new("user", "  Hi \n")], addGenerationPrompt: false));
    }

    // The parts of Llama-3.1-Instruct's template that matter without tools.
    private const string Llama31Template =
        "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n" +
        "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n" +
        "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}";

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    [Fact]
    public void Llama31_adds_the_knowledge_date_system_turn()
    {
        var t = ChatTemplates.Resolve(Llama31Template, "llama", _fx.Llama3);

        Assert.Equal("llama3.1", t.Name);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            t.Render([new("user", "Hi")], addGenerationPrompt: true));
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
            t.Render(Conversation.Take(2).ToList(), addGenerationPrompt: false));
    }

    [Fact]
    public void Llama32_prints_todays_date_from_the_clock()
    {
        var template = Llama31Template.Replace("{%- if not date_string is defined %}",
            "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- endif %}{%- if not date_string is defined %}",
            StringComparison.Ordinal);
        var t = ChatTemplates.Resolve(template, "llama", _fx.Llama3, new FixedClock(new DateTimeOffset(2026, 3, 5, 12, 0, 0, TimeSpan.Zero)));

        Assert.Contains("Today Date: 05 Mar 2026\n\n", t.Render([new("user", "Hi")], addGenerationPrompt: true), StringComparison.Ordinal);
    }

    [Fact]
    public void ChatMl_renders_the_official_format()
    {
        var t = new ChatMlChatTemplate();

        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", t.Render([new("user", "Hello")], addGenerationPrompt: true));
        Assert.Equal(
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
            "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n",
            t.Render(Conversation, addGenerationPrompt: false));
    }

    [Fact]
    public void Resolve_uses_the_raw_template_first()
    {
        Assert.Equal("llama3", ChatTemplates.Resolve(_fx.Llama3.ChatTemplate, "qwen2", _fx.Llama3).Name);
        Assert.Equal("chatml", ChatTemplates.Resolve(_fx.ChatMl.ChatTemplate, "llama", _fx.ChatMl).Name);
    }

    [Fact]
    public void Resolve_reads_qwen2_default_system_prompt()
    {
        var t = ChatTemplates.Resolve(Qwen2Template, "qwen2", _fx.ChatMl);

        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            t.Render([new("user", "Hi")], addGenerationPrompt: true));
        Assert.StartsWith("<|im_start|>system\nYou are terse.", t.Render(Conversation, addGenerationPrompt: false), StringComparison.Ordinal);
    }

    [Fact]
    public void Resolve_reads_qwen25_default_system_prompt()
    {
        // The non-tool branch of Qwen2.5-Instruct's template (whitespace control as in the original).
        const string qwen25 =
            "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n" +
            "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n" +
            "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n" +
            "    {%- endif %}\n{%- endif %}";
        var t = ChatTemplates.Resolve(qwen25, "qwen2", _fx.ChatMl);

        Assert.StartsWith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi",
            t.Render([new("user", "Hi")], addGenerationPrompt: true), StringComparison.Ordinal);
    }

    [Fact]
    public void Empty_conversation_renders_only_the_generation_prompt()
    {
        Assert.Equal("<|start_header_id|>assistant<|end_header_id|>\n\n", new Llama3ChatTemplate().Render([], addGenerationPrompt: true));
        Assert.Equal("<|im_start|>assistant\n", new ChatMlChatTemplate("default").Render([], addGenerationPrompt: true));
    }

    [Fact]
    public void Resolve_falls_back_to_model_type()
    {
        Assert.Equal("llama3", ChatTemplates.Resolve(null, "llama", _fx.Llama3).Name);
        Assert.Equal("llama3", ChatTemplates.Resolve("{{ unknown }}", "mistral", _fx.Llama3).Name);
        Assert.Equal("chatml", ChatTemplates.Resolve(null, "qwen2", _fx.ChatMl).Name);
    }

    [Fact]
    public void Resolve_fails_clearly_when_nothing_fits()
    {
        var unknownType = Assert.Throws<ChatTemplateException>(() => ChatTemplates.Resolve(null, "gpt_neox", _fx.Llama3));
        Assert.Contains("gpt_neox", unknownType.Message, StringComparison.Ordinal);
        Assert.Contains("llama3", unknownType.Message, StringComparison.Ordinal);
        Assert.Contains("chatml", unknownType.Message, StringComparison.Ordinal);

        // Llama model type but a vocabulary without the Llama-3 header tokens.
        Assert.Throws<ChatTemplateException>(() => ChatTemplates.Resolve(null, "mistral", _fx.ChatMl));
        Assert.Throws<ChatTemplateException>(() => ChatTemplates.Resolve("<|im_start|>", "qwen2", _fx.Llama3));
        Assert.IsAssignableFrom<ModelLoadException>(unknownType);
    }

    [Fact]
    public void Rendered_llama3_prompt_tokenizes_with_single_special_ids_and_one_bos()
    {
        var tok = _fx.Llama3;
        var prompt = ChatTemplates.Resolve(tok.ChatTemplate, "llama", tok).Render([new("user", "Hi")], addGenerationPrompt: true);
        var ids = tok.Encode(prompt);

        Assert.Equal(tok.BosTokenId, ids[0]);
        Assert.Single(ids, id => id == tok.BosTokenId);
        Assert.Equal(6, ids.Count(tok.IsSpecial)); // bos; start/end header and eot for the user; start/end header for the prompt
    }
}
