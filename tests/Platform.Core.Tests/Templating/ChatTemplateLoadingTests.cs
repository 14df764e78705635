// Where a model's chat template comes from, and what happens without one: the model's own
// template from tokenizer_config.json / chat_template.jinja / chat_template.json, an explicit
// --chat-template file overriding it, and no template meaning "chat refused with a reason".
using Platform.Core.Tests.Tokenization;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Templating;

public sealed class ChatTemplateLoadingTests : IClassFixture<SyntheticTokenizerFixture>
{
    private readonly SyntheticTokenizerFixture _fx;

    public ChatTemplateLoadingTests(SyntheticTokenizerFixture fx)
    {
        _fx = fx;
    }

    [Fact]
    public void Llama3_template_renders_the_official_format_and_tokenizes_with_one_bos()
    {
        var tok = _fx.Llama3;
        var (template, problem) = ChatTemplates.Load(tok, overridePath: null);
        Assert.Null(problem);
        var prompt = template!.Render([new("system", "You are terse."), new("user", "  Hi \n")], addGenerationPrompt: true);

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", prompt);
        var ids = tok.Encode(prompt);
        Assert.Equal(tok.BosTokenId, ids[0]);
        Assert.Single(ids, id => id == tok.BosTokenId);
    }

    [Fact]
    public void ChatMl_template_renders_the_official_format()
    {
        var (template, _) = ChatTemplates.Load(_fx.ChatMl, overridePath: null);
        Assert.Equal("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", template!.Render([new("user", "Hello")], addGenerationPrompt: true));
    }

    [Fact]
    public void No_template_is_a_reason_not_an_exception()
    {
        using var dir = new TempDirectory();
        SyntheticTokenizer.Write(dir.Path, 512, SyntheticTokenizer.ChatMlFamily);
        RemoveTemplate(dir);
        var tok = HfTokenizer.Load(dir.Path);

        var (template, problem) = ChatTemplates.Load(tok, overridePath: null);
        Assert.Null(template);
        Assert.Contains("no chat template", problem, StringComparison.Ordinal);
        Assert.Contains("--chat-template", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Chat_template_files_next_to_the_tokenizer_and_the_override()
    {
        using var dir = new TempDirectory();
        SyntheticTokenizer.Write(dir.Path, 512, SyntheticTokenizer.ChatMlFamily);
        RemoveTemplate(dir);
        File.WriteAllText(dir.File("chat_template.json"), "{\"chat_template\": \"J{{ messages[0].content }}\"}");
        var tok = HfTokenizer.Load(dir.Path);
        Assert.Equal("chat_template.json", tok.ChatTemplateSource);
        Assert.Equal("Jhi", ChatTemplates.Load(tok, null).Template!.Render([new("user", "hi")], false));

        File.WriteAllText(dir.File("chat_template.jinja"), "T{{ messages[0].content }}");
        Assert.Equal("Thi", ChatTemplates.Load(HfTokenizer.Load(dir.Path), null).Template!.Render([new("user", "hi")], false));

        var custom = dir.File("custom.jinja");
        File.WriteAllText(custom, "{{ bos_token ~ '|' ~ eos_token }}:{{ messages | length }}");
        var (overridden, _) = ChatTemplates.Load(_fx.Llama3, custom);
        Assert.Equal("<|begin_of_text|>|<|eot_id|>:1", overridden!.Render([new("user", "hi")], true));

        Assert.Throws<ChatTemplateException>(() => ChatTemplates.Load(_fx.Llama3, dir.File("missing.jinja")));
        File.WriteAllText(custom, "{% if %}");
        Assert.Throws<ChatTemplateException>(() => ChatTemplates.Load(_fx.Llama3, custom));
    }

    [Fact]
    public void A_template_that_raises_is_a_render_error()
    {
        using var dir = new TempDirectory();
        var file = dir.File("t.jinja");
        File.WriteAllText(file, "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok");
        var (template, _) = ChatTemplates.Load(_fx.Llama3, file);

        var ex = Assert.Throws<ChatTemplateRenderException>(() => template!.Render([new("assistant", "x")], true));
        Assert.True(ex.RaisedByTemplate);
        Assert.Contains("first message must be from the user", ex.Message, StringComparison.Ordinal);
    }

    private static void RemoveTemplate(TempDirectory dir)
    {
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("tokenizer_config.json")))!.AsObject();
        config.Remove("chat_template");
        File.WriteAllText(dir.File("tokenizer_config.json"), config.ToJsonString());
    }
}
