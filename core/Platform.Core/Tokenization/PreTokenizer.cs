// Splits text into the pieces that BPE encodes independently, following the Hugging Face
// pre_tokenizer pipeline (Sequence of Split / ByteLevel / Digits). Patterns from tokenizer.json run
// on .NET's regex engine, which matches UTF-16 units where Hugging Face's Rust engine matches code
// points. Two adjustments make astral characters (emoji, CJK Ext. B, math letters) split as in Rust:
//  * each negated class [^...] in the pattern also accepts a whole surrogate pair, so a symbol such as
//    an emoji counts as one character (e.g. the optional one-character prefix of a word);
//  * the regex runs on a same-length "shadow" of the text in which an astral letter or number is
//    replaced by two BMP stand-ins of its class, so \p{L} / \p{N} see it; pieces are cut from the
//    original text, never inside a surrogate pair. Known gap: an astral digit counts as two
//    characters against \p{N}{1,3}, which only matters when it is mixed with BMP digits.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Platform.Core.Tokenization;

internal sealed class PreTokenizer
{
    /// <summary>GPT-2's pattern; ByteLevel with use_regex = true applies it.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Llama-3's Split pattern.</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2's Split pattern (single digits).</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly IReadOnlyList<Step> _steps;

    public PreTokenizer(IReadOnlyList<Step> steps)
    {
        _steps = steps;
    }

    /// <summary>The GPT-2 default used when tokenizer.json has no pre_tokenizer.</summary>
    public static PreTokenizer Gpt2Default() => new([new ByteLevelStep(addPrefixSpace: false, useRegex: true)]);

    public static Regex CompilePattern(string pattern) =>
        new(MakeSurrogateAware(pattern), RegexOptions.CultureInvariant | RegexOptions.Compiled);

    /// <summary>Splits one stretch of text (no added tokens inside) into pieces.</summary>
    public List<string> Split(string text)
    {
        var current = new List<string> { text };
        var next = new List<string>();
        foreach (var step in _steps)
        {
            next.Clear();
            foreach (var piece in current)
            {
                step.Apply(piece, next);
            }

            (current, next) = (next, current);
        }

        current.RemoveAll(static p => p.Length == 0);
        return current;
    }

    /// <summary>
    /// Rewrites every top-level negated class [^...] to (?:[\uD800-\uDBFF][\uDC00-\uDFFF]|[^...]), so a
    /// surrogate pair counts as one character the class does not exclude (as a code point would in Rust).
    /// </summary>
    internal static string MakeSurrogateAware(string pattern)
    {
        var sb = new StringBuilder(pattern.Length + 64);
        var i = 0;
        while (i < pattern.Length)
        {
            var c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                sb.Append(c).Append(pattern[i + 1]);
                i += 2;
                continue;
            }

            if (c != '[')
            {
                sb.Append(c);
                i++;
                continue;
            }

            var end = FindClassEnd(pattern, i);
            var cls = pattern[i..(end + 1)];
            if (cls.StartsWith("[^", StringComparison.Ordinal))
            {
                sb.Append(@"(?:[\uD800-\uDBFF][\uDC00-\uDFFF]|").Append(cls).Append(')');
            }
            else
            {
                sb.Append(cls);
            }

            i = end + 1;
        }

        return sb.ToString();
    }

    private static int FindClassEnd(string pattern, int start)
    {
        var i = start + 1;
        if (i < pattern.Length && pattern[i] == '^')
        {
            i++;
        }

        if (i < pattern.Length && pattern[i] == ']')
        {
            i++;
        }

        var depth = 0;
        while (i < pattern.Length)
        {
            var c = pattern[i];
            if (c == '\\')
            {
                i += 2;
                continue;
            }

            if (c == '[')
            {
                depth++;
            }
            else if (c == ']')
            {
                if (depth == 0)
                {
                    return i;
                }

                depth--;
            }

            i++;
        }

        // Unbalanced: leave the rest untouched and let Regex report the error.
        return pattern.Length - 1;
    }

    /// <summary>
    /// Same-length copy of text in which each astral letter becomes "ªª" and each astral number "٠٠"
    /// (BMP characters of the same class); other characters are unchanged. Returns text itself when it has no surrogates.
    /// </summary>
    internal static string ShadowAstral(string text)
    {
        var first = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (first < 0)
        {
            return text;
        }

        var chars = text.ToCharArray();
        for (var i = first; i + 1 < chars.Length; i++)
        {
            if (!char.IsSurrogatePair(chars[i], chars[i + 1]))
            {
                continue;
            }

            var standIn = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(chars[i], chars[i + 1])) switch
            {
                UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                    or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => 'ª',
                UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => '٠',
                _ => '\0',
            };
            if (standIn != '\0')
            {
                chars[i] = standIn;
                chars[i + 1] = standIn;
            }

            i++;
        }

        return new string(chars);
    }

    internal abstract class Step
    {
        public abstract void Apply(string piece, List<string> output);
    }

    /// <summary>Hugging Face "Split" with behavior Isolated (matches and gaps become pieces) or Removed (gaps only).</summary>
    internal sealed class SplitStep : Step
    {
        private readonly Regex _regex;
        private readonly bool _removeMatches;

        public SplitStep(Regex regex, bool removeMatches)
        {
            _regex = regex;
            _removeMatches = removeMatches;
        }

        public override void Apply(string piece, List<string> output)
        {
            var subject = ShadowAstral(piece);
            if (_removeMatches)
            {
                var last = 0;
                foreach (var m in _regex.EnumerateMatches(subject))
                {
                    if (m.Index > last)
                    {
                        output.Add(piece[last..m.Index]);
                    }

                    last = Math.Max(last, m.Index + m.Length);
                }

                if (last < piece.Length)
                {
                    output.Add(piece[last..]);
                }

                return;
            }

            // Isolated: matches and the gaps between them tile the piece; cut at every match boundary
            // except inside a surrogate pair (so no piece ever holds half a character).
            var start = 0;
            foreach (var m in _regex.EnumerateMatches(subject))
            {
                Cut(piece, m.Index, ref start, output);
                Cut(piece, m.Index + m.Length, ref start, output);
            }

            Cut(piece, piece.Length, ref start, output);
        }

        private static void Cut(string piece, int at, ref int start, List<string> output)
        {
            if (at <= start || (at < piece.Length && char.IsLowSurrogate(piece[at]) && char.IsHighSurrogate(piece[at - 1])))
            {
                return;
            }

            output.Add(piece[start..at]);
            start = at;
        }
    }

    /// <summary>Hugging Face "ByteLevel" pre-tokenizer: optional leading space, optional GPT-2 regex split.</summary>
    internal sealed class ByteLevelStep : Step
    {
        private static readonly Lazy<SplitStep> Gpt2Split = new(() => new SplitStep(CompilePattern(Gpt2Pattern), removeMatches: false));
        private readonly bool _addPrefixSpace;
        private readonly bool _useRegex;

        public ByteLevelStep(bool addPrefixSpace, bool useRegex)
        {
            _addPrefixSpace = addPrefixSpace;
            _useRegex = useRegex;
        }

        public override void Apply(string piece, List<string> output)
        {
            if (_addPrefixSpace && !piece.StartsWith(' '))
            {
                piece = " " + piece;
            }

            if (_useRegex)
            {
                Gpt2Split.Value.Apply(piece, output);
            }
            else
            {
                output.Add(piece);
            }
        }
    }

    /// <summary>Hugging Face "Digits": runs of digits (or each digit) become their own pieces.</summary>
    internal sealed class DigitsStep : Step
    {
        private static readonly Regex Runs = new(@"\p{N}+", RegexOptions.CultureInvariant | RegexOptions.Compiled);
        private static readonly Regex Single = new(@"\p{N}", RegexOptions.CultureInvariant | RegexOptions.Compiled);
        private readonly SplitStep _split;

        public DigitsStep(bool individualDigits)
        {
            _split = new SplitStep(individualDigits ? Single : Runs, removeMatches: false);
        }

        public override void Apply(string piece, List<string> output) => _split.Apply(piece, output);
    }
}
