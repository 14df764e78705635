// The Hugging Face "normalizer" stage: rewrites each stretch of text between added tokens before
// pre-tokenization. SentencePiece-style tokenizers (Llama-2, Mistral, TinyLlama, Gemma) use it to
// turn spaces into '▁' (Replace) and to mark the start of the text (Prepend); byte-level ones use
// none or NFC. Steps run in order, as a tokenizer.json "Sequence" does.
using System.Text;
using System.Text.RegularExpressions;

namespace Platform.Core.Tokenization;

internal sealed class Normalizer
{
    private readonly IReadOnlyList<Step> _steps;

    public Normalizer(IReadOnlyList<Step> steps)
    {
        _steps = steps;
    }

    public bool IsEmpty => _steps.Count == 0;

    public string Apply(string text)
    {
        foreach (var step in _steps)
        {
            text = step.Apply(text);
        }

        return text;
    }

    internal abstract class Step
    {
        public abstract string Apply(string text);
    }

    /// <summary>NFC, NFD, NFKC or NFKD (Unicode normalization forms).</summary>
    internal sealed class UnicodeStep(NormalizationForm form) : Step
    {
        public override string Apply(string text) => text.IsNormalized(form) ? text : text.Normalize(form);
    }

    /// <summary>Prepend: adds a prefix to non-empty text (Hugging Face leaves empty text empty).</summary>
    internal sealed class PrependStep(string prefix) : Step
    {
        public override string Apply(string text) => text.Length == 0 ? text : prefix + text;
    }

    /// <summary>Replace: every match of a literal string or a regex becomes the content.</summary>
    internal sealed class ReplaceStep : Step
    {
        private readonly string? _literal;
        private readonly Regex? _regex;
        private readonly string _content;

        public ReplaceStep(string? literal, Regex? regex, string content)
        {
            _literal = literal;
            _regex = regex;
            _content = content;
        }

        public override string Apply(string text) =>
            _literal is not null
                ? text.Replace(_literal, _content, StringComparison.Ordinal)
                : _regex!.Replace(text, _content.Replace("$", "$$", StringComparison.Ordinal));
    }

    internal sealed class LowercaseStep : Step
    {
        public override string Apply(string text) => text.ToLowerInvariant();
    }

    /// <summary>Strip: removes whitespace at the start and/or end.</summary>
    internal sealed class StripStep(bool left, bool right) : Step
    {
        public override string Apply(string text) =>
            left && right ? text.Trim() : left ? text.TrimStart() : right ? text.TrimEnd() : text;
    }
}
