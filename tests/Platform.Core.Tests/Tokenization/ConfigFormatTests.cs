// Variants of the Hugging Face file formats seen in real model repositories.
using System.Text.Json.Nodes;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class ConfigFormatTests
{
    [Fact]
    public void Older_object_form_of_bos_and_eos_tokens()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        File.WriteAllText(dir.File("tokenizer_config.json"), """
            {"bos_token": {"__type": "AddedToken", "content": "<|end|>", "lstrip": false},
             "eos_token": {"__type": "AddedToken", "content": "<|end|>"}, "add_bos_token": true}
            """);
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(265, tok.BosTokenId);
        Assert.Equal(265, tok.EosTokenId);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal([265, 259], tok.Encode("hello", addBos: true));
    }

    [Fact]
    public void Named_chat_template_list_picks_default()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        File.WriteAllText(dir.File("tokenizer_config.json"), """
            {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
            """);

        Assert.Equal("D", HfTokenizer.Load(dir.Path).ChatTemplate);
    }

    [Fact]
    public void Chat_template_jinja_file_is_used_when_the_config_has_none()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        File.WriteAllText(dir.File("chat_template.jinja"), "{{ messages }}");
        Assert.Equal("{{ messages }}", HfTokenizer.Load(dir.Path).ChatTemplate);

        File.WriteAllText(dir.File("tokenizer_config.json"), """{"chat_template": "from config"}""");
        Assert.Equal("from config", HfTokenizer.Load(dir.Path).ChatTemplate);
    }

    [Fact]
    public void Vocab_json_bos_token_named_in_config_becomes_special()
    {
        // GPT-2 style: <|endoftext|> lives in vocab.json, only tokenizer_config.json says it is special.
        using var dir = new TempDirectory();
        var vocab = TinyTokenizerTests.Vocab();
        vocab["<|endoftext|>"] = 265;
        File.WriteAllText(dir.File("vocab.json"), vocab.ToJsonString());
        File.WriteAllText(dir.File("merges.txt"), "h e\n");
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
        var tok = HfTokenizer.Load(dir.Path);

        Assert.True(tok.IsSpecial(265));
        Assert.Equal([256, 265], tok.Encode("he<|endoftext|>"));
        Assert.Equal("he", tok.Decode([256, 265], skipSpecialTokens: true));
    }

    [Fact]
    public void Qwen2_style_nfc_normalizer_and_digit_split_load()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        var root = JsonNode.Parse(File.ReadAllText(dir.File("tokenizer.json")))!;
        root["normalizer"] = new JsonObject { ["type"] = "NFC" };
        root["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Digits", ["individual_digits"] = true },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true }),
        };
        File.WriteAllText(dir.File("tokenizer.json"), root.ToJsonString());
        var tok = HfTokenizer.Load(dir.Path);

        // Individual digits: "12" becomes two pieces even though " ?\p{N}+" would keep them together.
        Assert.Equal(['1', '2', 259], tok.Encode("12hello"));
        Assert.Equal("café 42", tok.Decode(tok.Encode("café 42")));
    }

    [Fact]
    public void Byte_level_add_prefix_space()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        var root = JsonNode.Parse(File.ReadAllText(dir.File("tokenizer.json")))!;
        root["pre_tokenizer"]!["add_prefix_space"] = true;
        File.WriteAllText(dir.File("tokenizer.json"), root.ToJsonString());
        var tok = HfTokenizer.Load(dir.Path);

        // "world" gets a leading space and becomes the single token " world".
        Assert.Equal([263], tok.Encode("world"));
    }
}
