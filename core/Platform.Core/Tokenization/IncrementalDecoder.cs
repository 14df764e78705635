// Streaming detokenization: turns token ids into text chunks as they are generated. Bytes of a
// character split across tokens (an emoji is often 2-4 byte tokens) are held until the character
// is complete, so no chunk ever ends in a broken UTF-8 sequence. The concatenated chunks equal
// HfTokenizer.Decode of all ids, except that a SentencePiece decoder's Strip of the leading space is
// not applied: generated text continues the prompt, so "▁Hello" streams as " Hello" (as vLLM's
// detokenizer, which decodes against the prompt's last tokens, does). Not thread-safe: one decoder per stream.
using System.Text;

namespace Platform.Core.Tokenization;

public sealed class IncrementalDecoder
{
    private readonly HfTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    internal IncrementalDecoder(HfTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Adds one token; returns the text that is now complete (possibly empty).</summary>
    public string Push(int tokenId)
    {
        var bytes = _tokenizer.TokenBytes(tokenId, _skipSpecialTokens);
        return bytes is null ? string.Empty : Convert(bytes, flush: false);
    }

    /// <summary>Ends the stream: held bytes that never completed a character come out as U+FFFD.</summary>
    public string Flush() => Convert([], flush: true);

    private string Convert(byte[] bytes, bool flush)
    {
        var needed = _utf8.GetCharCount(bytes, flush: false) + 4;
        if (_chars.Length < needed)
        {
            _chars = new char[Math.Max(needed, _chars.Length * 2)];
        }

        var count = _utf8.GetChars(bytes, 0, bytes.Length, _chars, 0, flush);
        return new string(_chars, 0, count);
    }
}
