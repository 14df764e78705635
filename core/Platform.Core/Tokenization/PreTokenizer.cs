// Splits text into the pieces that BPE encodes independently, following the Hugging Face
// pre_tokenizer pipeline (Sequence of Split / ByteLevel / Digits). Patterns from tokenizer.json run
// on .NET's regex engine after one rewrite: .NET matches UTF-16 units, the Rust engine matches code
// points, so each negated class [^...] also accepts a whole surrogate pair. That makes emoji and other
// astral symbols group exactly as in Hugging Face. Known gap: astral letters/digits (CJK Ext. B,
// math alphanumerics) are not \p{L}/\p{N} to .NET and may split differently.
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
            var last = 0;
            foreach (var m in _regex.EnumerateMatches(piece))
            {
                if (m.Length == 0)
                {
                    continue;
                }

                if (m.Index > last)
                {
                    output.Add(piece[last..m.Index]);
                }

                if (!_removeMatches)
                {
                    output.Add(piece.Substring(m.Index, m.Length));
                }

                last = m.Index + m.Length;
            }

            if (last < piece.Length)
            {
                output.Add(piece[last..]);
            }
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
