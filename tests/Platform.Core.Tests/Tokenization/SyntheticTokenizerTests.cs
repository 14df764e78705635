// The synthetic tokenizer must be byte-for-byte reproducible and hit the requested size exactly.
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class SyntheticTokenizerTests
{
    [Theory]
    [InlineData("llama3")]
    [InlineData("chatml")]
    public void Same_inputs_give_the_same_bytes(string family)
    {
        using var a = new TempDirectory();
        using var b = new TempDirectory();
        SyntheticTokenizer.Write(a.Path, 3000, family);
        SyntheticTokenizer.Write(b.Path, 3000, family);

        Assert.Equal(File.ReadAllBytes(a.File("tokenizer.json")), File.ReadAllBytes(b.File("tokenizer.json")));
        Assert.Equal(File.ReadAllBytes(a.File("tokenizer_config.json")), File.ReadAllBytes(b.File("tokenizer_config.json")));
    }

    [Theory]
    [InlineData("llama3", "906842C7721A449971441F63454CFC4BC96B98F60320256B53BD1F59E5D25654")]
    [InlineData("chatml", "9A6C9399B908F9B42AA8A2AFDD517F6DB820270033CA6E76C3306A06D4155E19")]
    public void Output_is_pinned_across_processes(string family, string sha256)
    {
        // Random-weight test models ship this tokenizer: a change here changes every generated model's token ids.
        // If the change is intended (new corpus, new format), update the hash.
        using var dir = new TempDirectory();
        SyntheticTokenizer.Write(dir.Path, 1000, family);

        Assert.Equal(sha256, Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(dir.File("tokenizer.json")))));
    }

    [Theory]
    [InlineData("llama3", 512)]
    [InlineData("chatml", 512)]
    [InlineData("llama3", 4096)]
    [InlineData("chatml", 32000)]
    [InlineData("llama3", 32000)]
    public void Vocabulary_has_exactly_the_requested_size(string family, int vocabSize)
    {
        using var dir = new TempDirectory();
        var info = SyntheticTokenizer.Write(dir.Path, vocabSize, family);
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(vocabSize, info.VocabSize);
        Assert.Equal(vocabSize, tok.VocabSize);
        // Every id is used: no holes between the byte tokens, the merges and the specials.
        for (var id = 0; id < vocabSize; id++)
        {
            Assert.NotNull(tok.IdToToken(id));
        }

        Assert.Equal(vocabSize - 1, info.SpecialTokens.Values.Max());
        Assert.All(info.SpecialTokens.Values, id => Assert.True(tok.IsSpecial(id)));
        Assert.Equal(info.EosTokenId, tok.EosTokenId);
        Assert.Contains(info.EosTokenId, info.StopTokenIds);
        const string text = "The ferryman counts 1,024 waves 🌊 — ünïcödé.";
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void Family_special_tokens_are_written()
    {
        using var dir = new TempDirectory();
        var llama = SyntheticTokenizer.Write(dir.Path, 600, "llama3");
        Assert.Equal(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            llama.SpecialTokens.OrderBy(kv => kv.Value).Select(kv => kv.Key));
        Assert.Equal(llama.SpecialTokens["<|begin_of_text|>"], llama.BosTokenId);
        Assert.Equal(llama.SpecialTokens["<|eot_id|>"], llama.EosTokenId);

        var chatml = SyntheticTokenizer.Write(dir.Path, 600, "chatml");
        Assert.Equal(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], chatml.SpecialTokens.OrderBy(kv => kv.Value).Select(kv => kv.Key));
        Assert.Null(chatml.BosTokenId);
        Assert.Equal(chatml.SpecialTokens["<|im_end|>"], chatml.EosTokenId);
        var tok = HfTokenizer.Load(dir.Path);
        Assert.Contains("<|im_start|>", tok.ChatTemplate, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_arguments_are_rejected()
    {
        using var dir = new TempDirectory();

        var family = Assert.Throws<ArgumentException>(() => SyntheticTokenizer.Write(dir.Path, 1000, "gpt2"));
        Assert.Contains("llama3", family.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => SyntheticTokenizer.Write(dir.Path, 200, "llama3"));
    }
}
