// The tool-call parsers on replies as models write them: Hermes/Qwen's <tool_call> blocks and
// Llama-3.1's bare JSON; prose kept as content; anything that only looks like a call kept as text;
// and the streaming split, which must never send as content a character that turns out to be a call.
using System.Text.Json;
using Platform.Router.Api.ToolCalls;

namespace Platform.Router.Tests;

public sealed class ToolCallParserTests
{
    private static readonly ToolCallParser Hermes = ToolCallParser.Create("hermes")!;
    private static readonly ToolCallParser Llama = ToolCallParser.Create("llama3_json")!;

    private static void AssertCall(ParsedToolCall call, string name, string argumentsJson)
    {
        Assert.Equal(name, call.Name);
        Assert.StartsWith("chatcmpl-tool-", call.Id, StringComparison.Ordinal);
        using var got = JsonDocument.Parse(call.Arguments);
        using var want = JsonDocument.Parse(argumentsJson);
        Assert.True(JsonElement.DeepEquals(want.RootElement, got.RootElement), $"arguments {call.Arguments}, expected {argumentsJson}");
    }

    [Fact]
    public void Hermes_reads_calls_after_prose_and_keeps_the_prose_as_content()
    {
        var reply = Hermes.Parse("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                                 + "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>");
        Assert.Equal("Let me check.\n", reply.Content);
        Assert.Equal(2, reply.Calls.Count);
        AssertCall(reply.Calls[0], "get_weather", """{"city":"Paris"}""");
        AssertCall(reply.Calls[1], "get_time", """{"zone":"CET"}""");
        Assert.NotEqual(reply.Calls[0].Id, reply.Calls[1].Id);
    }

    [Fact]
    public void Hermes_reads_a_last_call_cut_off_before_its_closing_tag_and_a_reply_of_calls_has_no_content()
    {
        var reply = Hermes.Parse("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n");
        Assert.Null(reply.Content);
        AssertCall(Assert.Single(reply.Calls), "f", "{}");
    }

    [Theory]
    [InlineData("no calls here")]
    [InlineData("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": }</tool_call>")]          // broken JSON
    [InlineData("<tool_call>{\"arguments\": {}}</tool_call>")]                             // no name
    [InlineData("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> and then prose")] // text after the calls
    public void Hermes_keeps_text_that_is_not_a_clean_call_reply_as_content(string text)
    {
        var reply = Hermes.Parse(text);
        Assert.Equal(text, reply.Content);
        Assert.Empty(reply.Calls);
    }

    [Fact]
    public void Llama3_reads_a_json_reply_with_parameters_after_the_python_tag_and_several_calls()
    {
        var one = Llama.Parse("<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}");
        Assert.Null(one.Content);
        AssertCall(Assert.Single(one.Calls), "get_weather", """{"city":"Paris"}""");

        var two = Llama.Parse(" {\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"arguments\": \"{\\\"y\\\": 2}\"}");
        Assert.Equal(2, two.Calls.Count);
        AssertCall(two.Calls[0], "a", """{"x":1}""");
        AssertCall(two.Calls[1], "b", """{"y":2}""");
    }

    [Theory]
    [InlineData("The weather is fine {really}.")]
    [InlineData("{\"name\": \"a\", \"parameters\": {}} trailing words")]
    [InlineData("{\"not\": \"a call\"}")]
    public void Llama3_keeps_prose_and_non_calls_as_content(string text)
    {
        var reply = Llama.Parse(text);
        Assert.Equal(text, reply.Content);
        Assert.Empty(reply.Calls);
    }

    /// <summary>Every split of a reply into streamed pieces: what goes out as content, then what Finish returns.</summary>
    private static (string Content, IReadOnlyList<ParsedToolCall> Calls) StreamInPieces(ToolCallParser parser, string text, int pieceLength)
    {
        var stream = new ToolCallStream(parser, parallelCalls: true);
        var content = new System.Text.StringBuilder();
        for (int i = 0; i < text.Length; i += pieceLength)
            content.Append(stream.Push(text.Substring(i, Math.Min(pieceLength, text.Length - i))));
        var (rest, calls) = stream.Finish();
        return (content.Append(rest).ToString(), calls);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void Streaming_sends_the_prose_and_never_a_piece_of_the_call_whatever_the_split(int pieceLength)
    {
        const string text = "Checking <tool now.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        var (content, calls) = StreamInPieces(Hermes, text, pieceLength);
        Assert.Equal("Checking <tool now.\n", content);
        AssertCall(Assert.Single(calls), "get_weather", """{"city":"Paris"}""");

        var (llamaContent, llamaCalls) = StreamInPieces(Llama, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"k\": \"v\"}}", pieceLength);
        Assert.Equal("", llamaContent);
        AssertCall(Assert.Single(llamaCalls), "f", """{"k":"v"}""");
    }

    [Fact]
    public void Streaming_prose_goes_out_as_it_comes_and_a_false_start_is_released_at_the_end()
    {
        var stream = new ToolCallStream(Hermes, parallelCalls: true);
        Assert.Equal("Hello ", stream.Push("Hello "));
        Assert.Equal("world", stream.Push("world<tool"));   // "<tool" may start a call: held
        Assert.Equal("<tool>", stream.Push(">"));             // it did not
        Assert.Equal("", stream.Push("<tool_call>{\"name\": \"f\", \"arguments\": {"));
        var (rest, calls) = stream.Finish();                   // the call never closed its JSON: it was text
        Assert.Equal("<tool_call>{\"name\": \"f\", \"arguments\": {", rest);
        Assert.Empty(calls);

        var llama = new ToolCallStream(Llama, parallelCalls: true);
        Assert.Equal("", llama.Push("  "));
        Assert.Equal("  Sure", llama.Push("Sure"));
        Assert.Equal(", here", llama.Push(", here"));
    }

    [Fact]
    public void Parallel_calls_off_keeps_only_the_first_call()
    {
        var stream = new ToolCallStream(Hermes, parallelCalls: false);
        stream.Push("<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>");
        var (_, calls) = stream.Finish();
        Assert.Equal("a", Assert.Single(calls).Name);
    }
}
