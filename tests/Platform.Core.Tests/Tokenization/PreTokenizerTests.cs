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
        Assert.Equal("ab\u00AA\u00AAc\uD83D\uDE00", PreTokenizer.ShadowAstral("ab\U0001D41Bc😀"));
    }

    [Fact]
    public void Surrogate_rewrite_touches_only_negated_classes()
    {
        Assert.Equal(@"(?:[\uD800-\uDBFF][\uDC00-\uDFFF]|[^\s\p{L}])+|[a-z]\[", PreTokenizer.MakeSurrogateAware(@"[^\s\p{L}]+|[a-z]\["));
    }

    [Fact]
    public void Gpt2_byte_level_default_splits_like_gpt2()
    {
        Assert.Equal(["Hello", " world", "'s", " 12345", "!!"], PreTokenizer.Gpt2Default().Split("Hello world's 12345!!"));
    }
}
