// One streamed reply passed through a tool-call parser: the text the model writes goes out as
// content as soon as the parser says it cannot belong to a call; the rest is held back and, when the
// generation ends, comes out as tool calls (or, if it does not parse as calls, as the content it was).
using System.Text;

namespace Platform.Router.Api.ToolCalls;

public sealed class ToolCallStream(ToolCallParser parser, bool parallelCalls)
{
    private readonly StringBuilder _text = new();
    private int _sent;

    /// <summary>Adds generated text; returns the content that may go to the client now ("" if none).</summary>
    public string Push(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0) return "";
        _text.Append(text);
        string all = _text.ToString();
        int settled = parser.SettledContentLength(all);
        if (settled <= _sent) return "";
        string content = all[_sent..settled];
        _sent = settled;
        return content;
    }

    /// <summary>The generation ended: the content not sent yet, and the calls (empty when the reply was prose).
    /// With parallel calls off only the first call is kept.</summary>
    public (string Content, IReadOnlyList<ParsedToolCall> Calls) Finish()
    {
        string all = _text.ToString();
        var reply = parser.Parse(all);
        if (reply.Calls.Count == 0) return (all[_sent..], []);
        string prose = reply.Content ?? "";
        string unsent = prose.Length > _sent ? prose[_sent..] : "";
        return (unsent, parallelCalls ? reply.Calls : reply.Calls.Take(1).ToList());
    }
}
