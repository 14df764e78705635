// How a token appears in logprobs: its own text and bytes, decoded alone (not against its neighbours), as
// vLLM and OpenAI show tokens. A byte-level BPE token can be part of a UTF-8 character (an emoji is often
// split over several); such a token's string is OpenAI's "bytes:\xe2\x80" spelling of its raw bytes, and
// its `bytes` field carries those bytes, so a client can join neighbouring tokens back into text. An id the
// tokenizer does not use (padding of the model's vocabulary) shows as an empty string with no bytes.
// Cached per id: a response with top_logprobs 20 looks up 21 tokens per generated token.
using System.Collections.Concurrent;
using System.Text;
using Platform.Core.Tokenization;

namespace Platform.Router.Api;

public sealed record TokenPiece(string Text, IReadOnlyList<byte> Bytes, int TextLength);

public sealed class TokenPieces(HfTokenizer tokenizer)
{
    private readonly ConcurrentDictionary<int, TokenPiece> _cache = new();

    public TokenPiece Get(int id) => _cache.GetOrAdd(id, static (id, t) => Build(t.RawTokenBytes(id) ?? []), tokenizer);

    /// <summary>The piece of raw bytes: their text when they are whole UTF-8, else "bytes:" and each byte as \xNN.</summary>
    public static TokenPiece Build(byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        string text;
        if (System.Text.Unicode.Utf8.IsValid(bytes)) text = Encoding.UTF8.GetString(bytes);
        else
        {
            var sb = new StringBuilder("bytes:", 6 + 4 * bytes.Length);
            foreach (byte b in bytes) sb.Append("\\x").Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            text = sb.ToString();
        }
        // Lengths in Unicode code points (Python's len, which vLLM's text_offset counts in).
        int length = 0;
        foreach (var _ in text.EnumerateRunes()) length++;
        return new TokenPiece(text, bytes, length);
    }
}
