// The Llama-3 / GPT-2 split patterns on .NET regex must cut text where Hugging Face (Rust regex on
// code points) does; expected pieces are worked out by hand from the patterns.
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class PreTokenizerTests
{
    private static List<string> SplitLlama3(string text) =>
        new PreTokenizer([new PreTokenizer.SplitStep(PreTokenizer.CompilePattern(PreTokenizer.Llama3Pattern), removeMatches: false)]).Split(text);

    [Fact]
    public void Llama3_pattern_groups_words_contractions_and_digits()
    {
        Assert.Equal(["Hello", " world", "'s", " ", "123", "45"], SplitLlama3("Hello world's 12345"));
        // (?i:...) makes the contraction case-insensitive.
        Assert.Equal(["I", "'M", " here", "!\n"], SplitLlama3("I'M here!\n"));
        Assert.Equal(["a", "  ", " b", "\n\n", "c"], SplitLlama3("a   b\n\nc"));
    }

    [Fact]
    public void Astral_symbol_counts_as_one_character_like_a_rust_code_point()
    {
        // "[^\r\n\p{L}\p{N}]?\p{L}+": the emoji is the optional one-character prefix of the word, as in Hugging Face.
        Assert.Equal(["😀abc"], SplitLlama3("😀abc"));
        Assert.Equal(["x", " 😀😀", " y"], SplitLlama3("x 😀😀 y"));
    }

    [Fact]
    public void Astral_letters_and_digits_are_letters_and_digits_like_in_rust()
    {
        // U+1D41B (math bold b) is Ll and U+20000/U+20001 (CJK Ext. B) are Lo, so \p{L}+ runs through them.
        Assert.Equal(["a\U0001D41Bc", " \U00020000\U00020001"], SplitLlama3("a\U0001D41Bc \U00020000\U00020001"));
        // U+1D7CF.. (math bold digits) are Nd: groups of three code points, never half a character.
        Assert.Equal(["𝟏𝟐𝟑", "𝟒𝟓"], SplitLlama3("𝟏𝟐𝟑𝟒𝟓"));
        // The high surrogate becomes a BMP character of the same category (Ll 'ß', So '©'); the low one stays.
        Assert.Equal("ab\u00DF\uDC1Bc\u00A9\uDE00", PreTokenizer.ShadowAstral("ab\U0001D41Bc😀"));
    }

    [Fact]
    public void Surrogate_rewrite_lets_class_atoms_swallow_the_low_surrogate()
    {
        Assert.Equal(@"(?:[^\s\p{L}][\uDC00-\uDFFF]?)+|(?:[a-z][\uDC00-\uDFFF]?)\[|(?:\p{N}[\uDC00-\uDFFF]?){1,3}",
            PreTokenizer.MakeSurrogateAware(@"[^\s\p{L}]+|[a-z]\[|\p{N}{1,3}"));
    }

    [Fact]
    public void Astral_symbols_are_symbols_like_in_rust()
    {
        // DeepSeek-V3's " ?[\p{P}\p{S}]+" takes emoji and the skin-tone modifier (So, Sk) in one run, as Hugging Face does.
        var split = new PreTokenizer([new PreTokenizer.SplitStep(PreTokenizer.CompilePattern(@" ?[\p{P}\p{S}]+|\s+|[\p{L}\p{M}]+"), removeMatches: false)]);
        Assert.Equal([",", " 🙂👍🏽", " ", "𠀀"], split.Split(", 🙂👍🏽 𠀀"));
    }

    [Fact]
    public void Gpt2_byte_level_default_splits_like_gpt2()
    {
        Assert.Equal(["Hello", " world", "'s", " 12345", "!!"], PreTokenizer.Gpt2Default().Split("Hello world's 12345!!"));
    }
}
