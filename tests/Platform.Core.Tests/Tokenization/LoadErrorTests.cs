// Every unusable tokenizer input must fail at load with a TokenizerLoadException that names the
// file and the field and says how to fix it, never later with a KeyNotFoundException.
using System.Text.Json.Nodes;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class LoadErrorTests
{
    private static TokenizerLoadException LoadFails(string dir)
    {
        var ex = Assert.Throws<TokenizerLoadException>(() => HfTokenizer.Load(dir));
        Assert.IsAssignableFrom<ModelLoadException>(ex);
        Assert.Contains("Fix:", ex.Message, StringComparison.Ordinal);
        return ex;
    }

    private static JsonObject TinyJson(TempDirectory dir)
    {
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        return JsonNode.Parse(File.ReadAllText(dir.File("tokenizer.json")))!.AsObject();
    }

    private static void Save(TempDirectory dir, JsonObject root) => File.WriteAllText(dir.File("tokenizer.json"), root.ToJsonString());

    [Fact]
    public void Missing_directory()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-model-" + Guid.NewGuid().ToString("N"));
        var ex = LoadFails(path);

        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Directory_without_tokenizer_files()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("vocab.json"), "{}"); // merges.txt missing: the pair is incomplete
        var ex = LoadFails(dir.Path);

        Assert.Contains("tokenizer.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains("merges.txt", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Truncated_json()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        var text = File.ReadAllText(dir.File("tokenizer.json"));
        File.WriteAllText(dir.File("tokenizer.json"), text[..(text.Length / 2)]);
        var ex = LoadFails(dir.Path);

        Assert.Equal(dir.File("tokenizer.json"), ex.FilePath);
        Assert.Equal("(json)", ex.Field);
        Assert.Contains("not valid JSON", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Merge_with_unknown_token()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["merges"]!.AsArray().Add(new JsonArray("he", "zzz"));
        Save(dir, root);
        var ex = LoadFails(dir.Path);

        Assert.Equal("model.merges[9]", ex.Field);
        Assert.Contains("'zzz'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("tokenizer.json", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Merge_whose_result_is_not_in_the_vocabulary()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["merges"]!.AsArray().Add("x y");
        Save(dir, root);

        Assert.Contains("'xy'", LoadFails(dir.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Malformed_merge_entry()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["merges"]!.AsArray().Add(42);
        Save(dir, root);

        Assert.Equal("model.merges[9]", LoadFails(dir.Path).Field);
    }

    [Fact]
    public void Unsupported_model_type()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["type"] = "WordPiece";
        Save(dir, root);
        var ex = LoadFails(dir.Path);

        Assert.Equal("model.type", ex.Field);
        Assert.Contains("WordPiece", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_vocab()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!.AsObject().Remove("vocab");
        Save(dir, root);

        Assert.Equal("model.vocab", LoadFails(dir.Path).Field);
    }

    [Fact]
    public void Vocab_without_all_byte_tokens()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["vocab"]!.AsObject().Remove("Ā"); // byte 0x00
        Save(dir, root);
        var ex = LoadFails(dir.Path);

        Assert.Equal("model.vocab", ex.Field);
        Assert.Contains("0x00", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Implausible_token_id()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["model"]!["vocab"]!["ld"] = 2_000_000_000;
        Save(dir, root);
        var ex = LoadFails(dir.Path);

        Assert.Equal("model.vocab", ex.Field);
        Assert.Contains("2000000000", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Added_token_without_id()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["added_tokens"]![1]!.AsObject().Remove("id");
        Save(dir, root);

        Assert.Equal("added_tokens[1].id", LoadFails(dir.Path).Field);
    }

    [Fact]
    public void Split_regex_that_does_not_compile()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(unclosed" }, ["behavior"] = "Isolated" }),
        };
        Save(dir, root);

        Assert.Equal("pre_tokenizer.pretokenizers[0].pattern.Regex", LoadFails(dir.Path).Field);
    }

    [Fact]
    public void Unsupported_pre_tokenizer()
    {
        using var dir = new TempDirectory();
        var root = TinyJson(dir);
        root["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" };
        Save(dir, root);
        var ex = LoadFails(dir.Path);

        Assert.Equal("pre_tokenizer.type", ex.Field);
        Assert.Contains("BertPreTokenizer", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Config_bos_token_not_in_vocabulary()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"bos_token": "<s>"}""");
        var ex = LoadFails(dir.Path);

        Assert.Equal(dir.File("tokenizer_config.json"), ex.FilePath);
        Assert.Equal("bos_token", ex.Field);
        Assert.Contains("<s>", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Malformed_config()
    {
        using var dir = new TempDirectory();
        TinyTokenizerTests.WriteTokenizerJson(dir.Path);
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"add_bos_token": "yes"}""");

        Assert.Equal("add_bos_token", LoadFails(dir.Path).Field);
    }

    [Fact]
    public void Bad_line_in_merges_txt()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("vocab.json"), TinyTokenizerTests.Vocab().ToJsonString());
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\nh e\nl l extra\n");
        var ex = LoadFails(dir.Path);

        Assert.Equal(dir.File("merges.txt"), ex.FilePath);
        Assert.Equal("line 3", ex.Field);
    }

    [Fact]
    public void Merges_txt_with_unknown_token()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("vocab.json"), TinyTokenizerTests.Vocab().ToJsonString());
        File.WriteAllText(dir.File("merges.txt"), "h e\nhe qq\n");
        var ex = LoadFails(dir.Path);

        Assert.Equal("line 2", ex.Field);
        Assert.Contains("'qq'", ex.Message, StringComparison.Ordinal);
    }
}
