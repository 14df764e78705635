// Splits text into the pieces that BPE encodes independently, following the Hugging Face
// pre_tokenizer pipeline (Sequence of Split / ByteLevel / Digits). Patterns from tokenizer.json run
// on .NET's regex engine, which matches UTF-16 units where Hugging Face's Rust engine matches code
// points. Two adjustments make astral characters (emoji, CJK Ext. B, math letters) split as in Rust:
//  * the regex runs on a same-length "shadow" of the text in which the high surrogate of each astral
//    character is replaced by a BMP stand-in of the same Unicode category (an emoji becomes '©', a
//    math letter 'ß'), so \p{S}, \p{L}, \p{N}... classify it as Rust does;
//  * every atom of the pattern that can match a stand-in also swallows the low surrogate after it, so
//    the pair counts as one character against ?, {1,3} and negated classes.
// Pieces are cut from the original text, never inside a surrogate pair.
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

    /// <summary>No steps: the whole stretch is one piece (Llama-2's tokenizer.json has no pre_tokenizer).</summary>
    public static PreTokenizer None() => new([]);

    /// <summary>Splits one stretch of text (no added tokens inside) into pieces.</summary>
    /// <param name="text">The normalized stretch.</param>
    /// <param name="atStart">True when the stretch starts the input (Metaspace's prepend_scheme "first").</param>
    public List<string> Split(string text, bool atStart = true)
    {
        var current = new List<string> { text };
        var next = new List<string>();
        foreach (var step in _steps)
        {
            next.Clear();
            for (var i = 0; i < current.Count; i++)
            {
                step.Apply(current[i], atStart && i == 0, next);
            }

            (current, next) = (next, current);
        }

        current.RemoveAll(static p => p.Length == 0);
        return current;
    }

    /// <summary>
    /// Makes a pattern see the shadow text (ShadowAstral) as Rust sees code points: every atom that can
    /// match a stand-in (a class [...], \p{..}, \P{..}, \w \W \d \D \S, '.') becomes
    /// (?:atom[\uDC00-\uDFFF]?), so a stand-in and the low surrogate after it count as one character.
    /// </summary>
    internal static string MakeSurrogateAware(string pattern)
    {
        const string Low = @"[\uDC00-\uDFFF]?";
        var sb = new StringBuilder(pattern.Length + 64);
        var i = 0;
        while (i < pattern.Length)
        {
            var c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                var e = pattern[i + 1];
                if ((e == 'p' || e == 'P') && i + 2 < pattern.Length && pattern[i + 2] == '{')
                {
                    var close = pattern.IndexOf('}', i + 2);
                    var end = close < 0 ? pattern.Length : close + 1;
                    sb.Append("(?:").Append(pattern, i, end - i).Append(Low).Append(')');
                    i = end;
                }
                else if (e is 'w' or 'W' or 'd' or 'D' or 'S')
                {
                    sb.Append("(?:").Append(c).Append(e).Append(Low).Append(')');
                    i += 2;
                }
                else
                {
                    sb.Append(c).Append(e);
                    i += 2;
                }

                continue;
            }

            if (c == '.')
            {
                sb.Append("(?:.").Append(Low).Append(')');
                i++;
                continue;
            }

            if (c != '[')
            {
                sb.Append(c);
                i++;
                continue;
            }

            var classEnd = FindClassEnd(pattern, i);
            sb.Append("(?:").Append(pattern, i, classEnd + 1 - i).Append(Low).Append(')');
            i = classEnd + 1;
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
    /// Same-length copy of text in which the high surrogate of each astral character becomes a BMP
    /// character of the same Unicode category (so \p{L}, \p{S}, \s... judge it as Rust judges the code
    /// point) and the low surrogate stays; other characters are unchanged. Returns text itself when it has no surrogates.
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
            if (char.IsSurrogatePair(chars[i], chars[i + 1]))
            {
                chars[i] = StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(chars[i], chars[i + 1])));
                i++;
            }
        }

        return new string(chars);
    }

    /// <summary>A BMP character of the category, chosen outside ASCII so no literal in a pattern matches it.</summary>
    private static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00DF',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u00AA',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.OtherSymbol => '\u00A9',
        UnicodeCategory.ModifierSymbol => '\u00A8',
        UnicodeCategory.MathSymbol => '\u00AC',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned
    };

    internal abstract class Step
    {
        public abstract void Apply(string piece, bool atStart, List<string> output);
    }

    /// <summary>What a Split does with a match (Hugging Face SplitDelimiterBehavior).</summary>
    internal enum SplitBehavior
    {
        /// <summary>Matches and gaps become pieces.</summary>
        Isolated,

        /// <summary>Gaps only.</summary>
        Removed,

        /// <summary>A match ends the piece before it.</summary>
        MergedWithPrevious,

        /// <summary>A match starts the piece after it.</summary>
        MergedWithNext,
    }

    /// <summary>Hugging Face "Split" on a regex.</summary>
    internal sealed class SplitStep : Step
    {
        private readonly Regex _regex;
        private readonly SplitBehavior _behavior;

        public SplitStep(Regex regex, SplitBehavior behavior)
        {
            _regex = regex;
            _behavior = behavior;
        }

        public SplitStep(Regex regex, bool removeMatches)
            : this(regex, removeMatches ? SplitBehavior.Removed : SplitBehavior.Isolated)
        {
        }

        public override void Apply(string piece, bool atStart, List<string> output) => Apply(piece, output);

        public void Apply(string piece, List<string> output)
        {
            var subject = ShadowAstral(piece);
            if (_behavior == SplitBehavior.Removed)
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
                if (_behavior != SplitBehavior.MergedWithPrevious)
                {
                    Cut(piece, m.Index, ref start, output);
                }

                if (_behavior != SplitBehavior.MergedWithNext)
                {
                    Cut(piece, m.Index + m.Length, ref start, output);
                }
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

        public override void Apply(string piece, bool atStart, List<string> output)
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
        private static readonly Regex Runs = CompilePattern(@"\p{N}+");
        private static readonly Regex Single = CompilePattern(@"\p{N}");
        private readonly SplitStep _split;

        public DigitsStep(bool individualDigits)
        {
            _split = new SplitStep(individualDigits ? Single : Runs, removeMatches: false);
        }

        public override void Apply(string piece, bool atStart, List<string> output) => _split.Apply(piece, output);
    }

    /// <summary>
    /// Hugging Face "Metaspace": spaces become the replacement ('▁'), a '▁' is prepended (always, only at
    /// the start of the input, or never) unless the piece already starts with one, and with split the piece
    /// is cut before every '▁' (each word keeps its leading '▁', as SentencePiece does).
    /// </summary>
    internal sealed class MetaspaceStep : Step
    {
        private readonly string _replacement;
        private readonly string _prependScheme;
        private readonly bool _split;

        public MetaspaceStep(char replacement, string prependScheme, bool split)
        {
            _replacement = replacement.ToString();
            _prependScheme = prependScheme;
            _split = split;
        }

        public override void Apply(string piece, bool atStart, List<string> output)
        {
            piece = piece.Replace(" ", _replacement, StringComparison.Ordinal);
            if ((_prependScheme == "always" || (_prependScheme == "first" && atStart))
                && piece.Length > 0 && !piece.StartsWith(_replacement, StringComparison.Ordinal))
            {
                piece = _replacement + piece;
            }

            if (!_split)
            {
                output.Add(piece);
                return;
            }

            var start = 0;
            for (var i = 1; i < piece.Length; i++)
            {
                if (piece[i] == _replacement[0])
                {
                    output.Add(piece[start..i]);
                    start = i;
                }
            }

            output.Add(piece[start..]);
        }
    }
}
