// Encode/decode round trips, special tokens and streaming detokenization on the synthetic
// Llama-3 and ChatML tokenizers (real tokenizer.json files with a Split regex pre-tokenizer).
using System.Text;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class RoundTripTests : IClassFixture<SyntheticTokenizerFixture>
{
    private readonly SyntheticTokenizerFixture _fx;

    public RoundTripTests(SyntheticTokenizerFixture fx)
    {
        _fx = fx;
    }

    public static TheoryData<string, string> Texts()
    {
        string[] texts =
        [
            "",
            "Hello, world! This is the river town; they don't need more.",
            "日本語のテキスト、中文文本。한국어 텍스트",
            "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇯🇵😀abc",
            "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0337a\u0336lgo",
            "  multiple   spaces\t\ttabs\n\n\nnewlines \r\n end  ",
            "numbers 1234567890 3.14159 -42 1e10 ٣٤٥",
            "mixed: café naïve Ω≈ç√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0000\u0001\u007f",
        ];
        var data = new TheoryData<string, string>();
        foreach (var family in new[] { "llama3", "chatml" })
        {
            foreach (var t in texts)
            {
                data.Add(family, t);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Decode_of_encode_is_identity(string family, string text)
    {
        var tok = _fx.Get(family);
        var ids = tok.Encode(text);

        Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
        Assert.Equal(text, tok.Decode(ids));
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Incremental_decoder_concatenation_equals_full_decode(string family, string text)
    {
        var tok = _fx.Get(family);
        var ids = tok.Encode(text);
        var decoder = tok.CreateIncrementalDecoder();
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            var chunk = decoder.Push(id);
            Assert.DoesNotContain('\uFFFD', chunk);
            sb.Append(chunk);
        }

        sb.Append(decoder.Flush());
        Assert.Equal(tok.Decode(ids, skipSpecialTokens: true), sb.ToString());
        Assert.Equal(text, sb.ToString());
    }

    [Fact]
    public void Emoji_split_across_tokens_is_held_until_complete()
    {
        var tok = _fx.Llama3;
        var ids = tok.Encode("😀");
        // The 4 UTF-8 bytes never merge in the corpus, so the emoji spans several tokens: the first alone is broken UTF-8.
        Assert.True(ids.Count > 1);
        Assert.Contains('\uFFFD', tok.Decode([ids[0]]));

        var decoder = tok.CreateIncrementalDecoder();
        for (var i = 0; i < ids.Count - 1; i++)
        {
            Assert.Equal("", decoder.Push(ids[i]));
        }

        Assert.Equal("😀", decoder.Push(ids[^1]));
        Assert.Equal("", decoder.Flush());
    }

    [Fact]
    public void Flush_emits_replacement_for_an_incomplete_character()
    {
        var tok = _fx.Llama3;
        var ids = tok.Encode("😀");
        var decoder = tok.CreateIncrementalDecoder();

        Assert.Equal("", decoder.Push(ids[0]));
        Assert.Equal(tok.Decode([ids[0]]), decoder.Flush());
    }

    [Fact]
    public void Llama3_special_tokens_in_text_encode_to_single_ids_and_decode_back()
    {
        var tok = _fx.Llama3;
        var s = _fx.Llama3Info.SpecialTokens;
        const string text = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>";
        var ids = tok.Encode(text);

        Assert.Equal(s["<|begin_of_text|>"], ids[0]);
        Assert.Equal(s["<|start_header_id|>"], ids[1]);
        Assert.Single(ids, id => id == s["<|end_header_id|>"]);
        Assert.Equal(s["<|eot_id|>"], ids[^1]);
        Assert.Equal(4, ids.Count(tok.IsSpecial));
        Assert.Equal("user", tok.Decode(ids.Skip(2).TakeWhile(id => id != s["<|end_header_id|>"])));
        Assert.Equal(text, tok.Decode(ids));
        Assert.Equal("user\n\nHi there", tok.Decode(ids, skipSpecialTokens: true));
        Assert.Equal([s["<|eot_id|>"]], tok.Encode("<|eot_id|>"));
    }

    [Fact]
    public void ChatMl_special_tokens_in_text_encode_to_single_ids()
    {
        var tok = _fx.ChatMl;
        var s = _fx.ChatMlInfo.SpecialTokens;
        var ids = tok.Encode("<|im_start|>user\nhi<|im_end|>\n<|endoftext|>");

        Assert.Equal(s["<|im_start|>"], ids[0]);
        Assert.Equal(s["<|endoftext|>"], ids[^1]);
        Assert.Contains(s["<|im_end|>"], ids);
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", tok.Decode(ids));
    }

    [Fact]
    public void Incremental_decoder_skips_special_tokens_by_default_and_keeps_them_on_request()
    {
        var tok = _fx.Llama3;
        var ids = tok.Encode("Hi<|eot_id|>");

        var skipping = tok.CreateIncrementalDecoder();
        Assert.Equal("Hi", string.Concat(ids.Select(skipping.Push)) + skipping.Flush());
        var keeping = tok.CreateIncrementalDecoder(skipSpecialTokens: false);
        Assert.Equal("Hi<|eot_id|>", string.Concat(ids.Select(keeping.Push)) + keeping.Flush());
    }

    [Fact]
    public void AddBos_prepends_the_configured_bos_token()
    {
        var tok = _fx.Llama3;

        Assert.Equal(_fx.Llama3Info.BosTokenId, tok.BosTokenId);
        Assert.Equal(_fx.Llama3Info.EosTokenId, tok.EosTokenId);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal(tok.BosTokenId, tok.Encode("x", addBos: true)[0]);
        Assert.Equal("x", tok.Decode(tok.Encode("x")));
        Assert.Null(_fx.ChatMl.BosTokenId);
        Assert.Throws<InvalidOperationException>(() => _fx.ChatMl.Encode("x", addBos: true));
    }

    [Fact]
    public void Concurrent_encoding_gives_the_same_ids()
    {
        // A fresh instance, so the threads race on an empty word cache; expected ids come from another instance.
        var tok = HfTokenizer.Load(_fx.Llama3Dir);
        var texts = Enumerable.Range(0, 64).Select(i => $"request {i}: the ferryman counts {i * 37} waves 🌊 under 日本 skies").ToArray();
        var expected = texts.Select(t => _fx.Llama3.Encode(t).ToArray()).ToArray();
        var results = new int[texts.Length][];

        Parallel.For(0, texts.Length * 8, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            var ids = tok.Encode(texts[i % texts.Length]).ToArray();
            Assert.Equal(expected[i % texts.Length], ids);
            results[i % texts.Length] = ids;
        });

        Assert.All(results, Assert.NotNull);
    }

    [Fact]
    public void Decode_rejects_ids_outside_the_vocabulary()
    {
        var tok = _fx.Llama3;

        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([-1]));
    }

    [Fact]
    public void Learned_merges_compress_corpus_words()
    {
        // "river" occurs often in the built-in text, so it must be a single token: shows merges are applied.
        var tok = _fx.Llama3;

        Assert.Single(tok.Encode(" river"));
        Assert.True(tok.Encode("The river town wakes before the sun.").Count < 12);
    }

    [Fact]
    public void Large_input_encodes_fast_and_round_trips()
    {
        var tok = _fx.Llama3;
        var sb = new StringBuilder();
        var n = 0;
        while (sb.Length < 400_000)
        {
            sb.Append("Paragraph ").Append(n++).Append(": the ferryman counts 1,024 waves 🌊 and writes 日本語. ");
        }

        sb.Append(new string('a', 50_000)); // one 50K-character piece: merging must not be quadratic
        var text = sb.ToString();
        tok.Encode("warm up");
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var ids = tok.Encode(text);
        watch.Stop();

        Assert.True(ids.Count > 100_000, $"only {ids.Count} tokens");
        // Typically well under a second; the bound is loose because the test machine is shared.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"encoding {ids.Count} tokens took {watch.Elapsed}");
        Assert.Equal(text, tok.Decode(ids));
    }
}
