// A tokenizer small enough to encode by hand: the 256 byte tokens (id = byte value) plus nine
// merges and two added tokens. Expected ids below are derived by applying the merges in rank order
// on paper; the same vocabulary as vocab.json + merges.txt must give the same ids.
using System.Text;
using System.Text.Json.Nodes;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class TinyTokenizerTests
{
    // GPT-2 bytes_to_unicode, written independently of the production table.
    internal static char ByteChar(int b)
    {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        {
            return (char)b;
        }

        var n = 0;
        for (var x = 0; x < b; x++)
        {
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)))
            {
                n++;
            }
        }

        return (char)(256 + n);
    }

    // 256 "he", 257 "ll", 258 "hell", 259 "hello", 260 "Ġw", 261 "or", 262 "Ġwor", 263 "Ġworld", 264 "ld".
    private static readonly string[] MergedTokens = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "Ġworld", "ld"];

    // Rank order. Mixed "a b" and [a, b] forms, as both occur in real tokenizer.json files.
    private static readonly (string Left, string Right)[] Merges =
    [
        ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"), ("l", "d"), ("Ġw", "or"), ("Ġwor", "ld"),
    ];

    private const int EndId = 265;
    private const int ExtraId = 266;

    internal static JsonObject Vocab()
    {
        var vocab = new JsonObject();
        for (var b = 0; b < 256; b++)
        {
            vocab[ByteChar(b).ToString()] = b;
        }

        for (var i = 0; i < MergedTokens.Length; i++)
        {
            vocab[MergedTokens[i]] = 256 + i;
        }

        return vocab;
    }

    internal static void WriteTokenizerJson(string dir)
    {
        var merges = new JsonArray();
        for (var i = 0; i < Merges.Length; i++)
        {
            merges.Add(i % 2 == 0 ? JsonValue.Create($"{Merges[i].Left} {Merges[i].Right}") : new JsonArray(Merges[i].Left, Merges[i].Right));
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = EndId, ["content"] = "<|end|>", ["special"] = true },
                new JsonObject { ["id"] = ExtraId, ["content"] = "<extra>", ["special"] = false }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = Vocab(), ["merges"] = merges },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
    }

    private static void WriteVocabAndMerges(string dir)
    {
        File.WriteAllText(Path.Combine(dir, "vocab.json"), Vocab().ToJsonString());
        var lines = new StringBuilder("#version: 0.2\n");
        foreach (var (l, r) in Merges)
        {
            lines.Append(l).Append(' ').Append(r).Append('\n');
        }

        File.WriteAllText(Path.Combine(dir, "merges.txt"), lines.ToString());
        var config = new JsonObject
        {
            ["added_tokens_decoder"] = new JsonObject
            {
                [EndId.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject { ["content"] = "<|end|>", ["special"] = true },
                [ExtraId.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject { ["content"] = "<extra>", ["special"] = false },
            },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
    }

    public static TheoryData<string, int[]> HandDerived => new()
    {
        // h e l l o -> he,l,l,o (rank 0) -> he,ll,o (1) -> hell,o (2) -> hello (3). " world": Ġw (4), or (5),
        // ld (6) before Ġw+or (7), then Ġwor+ld (8). Added token matched as one id.
        { "hello world<|end|>", [259, 263, EndId] },
        // hell+o (3) wins over l+d (6); then ld.
        { "hellold", [259, 264] },
        // Two overlapping "l l" pairs: the leftmost merges first.
        { "lll", [257, 'l'] },
        // GPT-2 regex: " ?\p{N}+" keeps the space with the digits; no merges apply.
        { " 42", [' ', '4', '2'] },
        // Non-special added token in the middle of text; "é" is two byte tokens 0xC3 0xA9.
        { "he<extra>é", [256, ExtraId, 0xC3, 0xA9] },
        // Longer than the small-word path (24 bytes): the priority-queue merge must agree. No merge joins o+h.
        { string.Concat(Enumerable.Repeat("hello", 10)), Enumerable.Repeat(259, 10).ToArray() },
        // 31 l's: pairs merge left to right, one l is left over.
        { new string('l', 31), [.. Enumerable.Repeat(257, 15), 'l'] },
        // Whitespace run before a word: "\s+(?!\S)" takes all but the last space, which goes with the word.
        { "   world", [' ', ' ', 263] },
    };

    [Theory]
    [MemberData(nameof(HandDerived))]
    public void Encode_gives_hand_derived_ids(string text, int[] expected)
    {
        using var dir = new TempDirectory();
        WriteTokenizerJson(dir.Path);
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(expected, tok.Encode(text));
        Assert.Equal(text, tok.Decode(expected));
    }

    [Fact]
    public void Vocab_size_and_special_flags()
    {
        using var dir = new TempDirectory();
        WriteTokenizerJson(dir.Path);
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(267, tok.VocabSize);
        Assert.True(tok.IsSpecial(EndId));
        Assert.False(tok.IsSpecial(ExtraId));
        Assert.False(tok.IsSpecial(259));
        Assert.Null(tok.BosTokenId);
        Assert.Null(tok.ChatTemplate);
        Assert.Equal("hello world", tok.Decode([259, 263, EndId], skipSpecialTokens: true));
        Assert.Equal("<extra>", tok.Decode([ExtraId], skipSpecialTokens: true));
    }

    [Fact]
    public void Lstrip_and_rstrip_added_tokens_swallow_adjacent_whitespace()
    {
        using var dir = new TempDirectory();
        WriteTokenizerJson(dir.Path);
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("tokenizer.json")))!;
        root["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 267, ["content"] = "<mask>", ["special"] = true, ["lstrip"] = true });
        root["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 268, ["content"] = "<r>", ["special"] = true, ["rstrip"] = true });
        File.WriteAllText(dir.File("tokenizer.json"), root.ToJsonString());
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(['a', 267, 'b'], tok.Encode("a  <mask>b"));
        Assert.Equal([268, 'x', 267], tok.Encode("<r> \t x <mask>"));
        // Without stripping the spaces stay ordinary text.
        Assert.Equal(['a', ' ', EndId], tok.Encode("a <|end|>"));
    }

    [Theory]
    [MemberData(nameof(HandDerived))]
    public void Vocab_json_and_merges_txt_give_the_same_ids(string text, int[] expected)
    {
        using var dir = new TempDirectory();
        WriteVocabAndMerges(dir.Path);
        var tok = HfTokenizer.Load(dir.Path);

        Assert.Equal(expected, tok.Encode(text));
        Assert.True(tok.IsSpecial(EndId));
    }
}
