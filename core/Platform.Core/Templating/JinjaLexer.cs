// Jinja source → segments (text, {{ expression }}, {% statement %}) with their expression tokens.
// Whitespace is handled as Hugging Face's chat-template environment does: trim_blocks (the first
// newline after a block or comment tag is dropped), lstrip_blocks (spaces and tabs before a block or
// comment tag at the start of a line are dropped, unless the tag opens with '+'), and '-' on either
// side of any tag strips all whitespace on that side. Comments {# #} vanish.
using System.Globalization;
using System.Text;

namespace Platform.Core.Templating;

internal enum TokenKind
{
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

internal readonly record struct Token(TokenKind Kind, string Text, int Position)
{
    public bool IsOp(string op) => Kind == TokenKind.Operator && Text == op;

    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;
}

internal enum SegmentKind
{
    Text,
    Expression,
    Statement,
}

internal sealed record Segment(SegmentKind Kind, string Text, List<Token> Tokens, int Position);

internal static class JinjaLexer
{
    private static readonly string[] Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"];

    public static List<Segment> Lex(string source)
    {
        // keep_trailing_newline=False: Jinja drops one newline at the very end of the template.
        if (source.EndsWith('\n'))
        {
            source = source[..^(source.EndsWith("\r\n", StringComparison.Ordinal) ? 2 : 1)];
        }

        var segments = new List<Segment>();
        var text = new StringBuilder();
        var pos = 0;
        var trimNextNewline = false;
        var stripNextWhitespace = false;
        while (pos < source.Length)
        {
            var open = NextTag(source, pos);
            var end = open < 0 ? source.Length : open;
            var chunk = source[pos..end];
            if (stripNextWhitespace)
            {
                chunk = chunk.TrimStart();
            }
            else if (trimNextNewline)
            {
                chunk = chunk.StartsWith("\r\n", StringComparison.Ordinal) ? chunk[2..] : chunk.StartsWith('\n') ? chunk[1..] : chunk;
            }

            text.Append(chunk);
            trimNextNewline = stripNextWhitespace = false;
            if (open < 0)
            {
                break;
            }

            var kind = source[open + 1];
            var inner = open + 2;
            var modifier = inner < source.Length ? source[inner] : '\0';
            if (modifier == '-')
            {
                TrimEndWhitespace(text);
                inner++;
            }
            else if (modifier == '+')
            {
                inner++;
            }
            else if (kind is '%' or '#')
            {
                LStripBlock(text, source, open, pos);
            }

            if (kind == '#')
            {
                var close = source.IndexOf("#}", inner, StringComparison.Ordinal);
                if (close < 0)
                {
                    throw new TemplateSyntaxException("a comment {# is never closed with #}", open);
                }

                stripNextWhitespace = source[close - 1] == '-';
                trimNextNewline = true;
                pos = close + 2;
                continue;
            }

            Flush(segments, text, open);
            var closer = kind == '{' ? '}' : '%';
            var (tokens, after, stripAfter) = LexTag(source, inner, closer, open);
            if (kind == '%' && tokens.Count > 1 && tokens[0].IsName("raw"))
            {
                // {% raw %}...{% endraw %}: the body is text, tags inside are not interpreted.
                var endRaw = FindEndRaw(source, after, out var resume);
                text.Append(source[after..endRaw]);
                pos = resume;
                trimNextNewline = true;
                continue;
            }

            segments.Add(new Segment(kind == '{' ? SegmentKind.Expression : SegmentKind.Statement, "", tokens, open));
            stripNextWhitespace = stripAfter;
            trimNextNewline = kind == '%';
            pos = after;
        }

        Flush(segments, text, source.Length);
        return segments;
    }

    private static int NextTag(string source, int from)
    {
        for (var i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
        {
            if (source[i + 1] is '{' or '%' or '#')
            {
                return i;
            }
        }

        return -1;
    }

    private static void Flush(List<Segment> segments, StringBuilder text, int position)
    {
        if (text.Length > 0)
        {
            segments.Add(new Segment(SegmentKind.Text, text.ToString(), [], position));
            text.Clear();
        }
    }

    private static void TrimEndWhitespace(StringBuilder text)
    {
        var n = text.Length;
        while (n > 0 && char.IsWhiteSpace(text[n - 1]))
        {
            n--;
        }

        text.Length = n;
    }

    /// <summary>lstrip_blocks: drop the spaces and tabs before the tag when only they stand between it and a newline (or the start).</summary>
    private static void LStripBlock(StringBuilder text, string source, int tag, int chunkStart)
    {
        var j = tag;
        while (j > chunkStart && source[j - 1] is ' ' or '\t')
        {
            j--;
        }

        var atLineStart = j == 0 || (j > chunkStart && source[j - 1] == '\n');
        var n = tag - j;
        if (atLineStart && n > 0 && n <= text.Length)
        {
            text.Length -= n;
        }
    }

    private static int FindEndRaw(string source, int from, out int resume)
    {
        var i = from;
        while ((i = source.IndexOf("{%", i, StringComparison.Ordinal)) >= 0)
        {
            var j = i + 2;
            while (j < source.Length && (source[j] == '-' || char.IsWhiteSpace(source[j])))
            {
                j++;
            }

            if (string.CompareOrdinal(source, j, "endraw", 0, 6) == 0)
            {
                var close = source.IndexOf("%}", j, StringComparison.Ordinal);
                resume = close < 0 ? source.Length : close + 2;
                return i;
            }

            i += 2;
        }

        throw new TemplateSyntaxException("{% raw %} is never closed with {% endraw %}", from);
    }

    private static (List<Token> Tokens, int After, bool StripAfter) LexTag(string s, int pos, char closer, int tagStart)
    {
        var tokens = new List<Token>();
        while (true)
        {
            while (pos < s.Length && char.IsWhiteSpace(s[pos]))
            {
                pos++;
            }

            if (pos >= s.Length)
            {
                throw new TemplateSyntaxException($"a tag is never closed with {closer}}}", tagStart);
            }

            if (s[pos] == '-' && pos + 2 < s.Length && s[pos + 1] == closer && s[pos + 2] == '}')
            {
                tokens.Add(new Token(TokenKind.End, "", pos));
                return (tokens, pos + 3, true);
            }

            if (s[pos] == '+' && pos + 2 < s.Length && s[pos + 1] == closer && s[pos + 2] == '}')
            {
                tokens.Add(new Token(TokenKind.End, "", pos));
                return (tokens, pos + 3, false);
            }

            if (s[pos] == closer && pos + 1 < s.Length && s[pos + 1] == '}')
            {
                tokens.Add(new Token(TokenKind.End, "", pos));
                return (tokens, pos + 2, false);
            }

            var c = s[pos];
            if (c is '"' or '\'')
            {
                var (value, next) = ReadString(s, pos);
                tokens.Add(new Token(TokenKind.String, value, pos));
                pos = next;
            }
            else if (char.IsDigit(c))
            {
                var start = pos;
                while (pos < s.Length && (char.IsDigit(s[pos]) || s[pos] == '_'))
                {
                    pos++;
                }

                var isFloat = false;
                if (pos + 1 < s.Length && s[pos] == '.' && char.IsDigit(s[pos + 1]))
                {
                    isFloat = true;
                    pos++;
                    while (pos < s.Length && char.IsDigit(s[pos]))
                    {
                        pos++;
                    }
                }

                if (pos < s.Length && s[pos] is 'e' or 'E')
                {
                    isFloat = true;
                    pos++;
                    if (pos < s.Length && s[pos] is '+' or '-')
                    {
                        pos++;
                    }

                    while (pos < s.Length && char.IsDigit(s[pos]))
                    {
                        pos++;
                    }
                }

                tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[start..pos].Replace("_", "", StringComparison.Ordinal), start));
            }
            else if (char.IsLetter(c) || c == '_')
            {
                var start = pos;
                while (pos < s.Length && (char.IsLetterOrDigit(s[pos]) || s[pos] == '_'))
                {
                    pos++;
                }

                tokens.Add(new Token(TokenKind.Name, s[start..pos], start));
            }
            else
            {
                var op = Operators.FirstOrDefault(o => string.CompareOrdinal(s, pos, o, 0, o.Length) == 0)
                    ?? throw new TemplateSyntaxException($"unexpected character '{c}'", pos);
                tokens.Add(new Token(TokenKind.Operator, op, pos));
                pos += op.Length;
            }
        }
    }

    private static (string Value, int Next) ReadString(string s, int pos)
    {
        var quote = s[pos];
        var sb = new StringBuilder();
        var i = pos + 1;
        while (i < s.Length && s[i] != quote)
        {
            if (s[i] == '\\' && i + 1 < s.Length)
            {
                var e = s[i + 1];
                i += 2;
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case '0': sb.Append('\0'); break;
                    case '\\': sb.Append('\\'); break;
                    case '\'': sb.Append('\''); break;
                    case '"': sb.Append('"'); break;
                    case '\n': break;
                    case 'u' when i + 4 <= s.Length:
                        sb.Append((char)int.Parse(s.AsSpan(i, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        i += 4;
                        break;
                    case 'x' when i + 2 <= s.Length:
                        sb.Append((char)int.Parse(s.AsSpan(i, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        i += 2;
                        break;
                    default:
                        // Python keeps unknown escapes as written.
                        sb.Append('\\').Append(e);
                        break;
                }

                continue;
            }

            sb.Append(s[i]);
            i++;
        }

        if (i >= s.Length)
        {
            throw new TemplateSyntaxException("a string literal is never closed", pos);
        }

        return (sb.ToString(), i + 1);
    }
}
