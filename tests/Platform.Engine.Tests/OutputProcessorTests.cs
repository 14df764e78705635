// The per-request output processor alone (detokenizer + stop checker), and the
// submission limits, without an engine: the stop order (stop token, stop string,
// length), the text held back while it may start a stop string, and the
// refusals that name the fix.
using Platform.Core.Tokenization;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class OutputProcessorTests
{
    private static readonly HfTokenizer Tokenizer = HfTokenizer.Load(TestModels.TinyLlama);

    private static (string Text, FinishReason? Finish, int Tokens) Run(OutputProcessor p, IReadOnlyList<int> tokens, int maxTotal = 1000)
    {
        var text = "";
        for (int i = 0; i < tokens.Count; i++)
        {
            var (piece, finish) = p.Process(tokens[i], i + 1, 10 + i + 1, maxTotal);
            text += piece;
            if (finish is not null) return (text, finish, i + 1);
        }
        return (text, null, tokens.Count);
    }

    [Fact]
    public void A_stop_string_ends_the_output_before_it_and_held_text_never_leaks_it()
    {
        const string text = "hello world, stop here please";
        var tokens = Tokenizer.Encode(text);
        var sampling = new SamplingParams { MaxTokens = 100, StopStrings = ["stop"] };
        var p = new OutputProcessor(sampling, new HashSet<int>(), Tokenizer.CreateIncrementalDecoder());
        var streamed = "";
        FinishReason? finish = null;
        for (int i = 0; i < tokens.Count && finish is null; i++)
        {
            (var piece, finish) = p.Process(tokens[i], i + 1, i + 11, 1000);
            streamed += piece;
            Assert.DoesNotContain("stop", streamed, StringComparison.Ordinal);
        }
        Assert.Equal(FinishReason.Stop, finish);
        Assert.Equal(text[..text.IndexOf("stop", StringComparison.Ordinal)], streamed);
    }

    [Fact]
    public void Stop_tokens_end_without_their_text_and_length_flushes_everything()
    {
        var tokens = Tokenizer.Encode("one two three four");
        var eos = new HashSet<int> { tokens[2] };
        var stopped = Run(new OutputProcessor(new SamplingParams { MaxTokens = 100 }, eos, Tokenizer.CreateIncrementalDecoder()), tokens);
        Assert.Equal((FinishReason.Stop, 3), (stopped.Finish!.Value, stopped.Tokens));
        Assert.Equal(Tokenizer.Decode(tokens.Take(2), skipSpecialTokens: true), stopped.Text);

        // EOS ignored: the same token is text, and max_tokens ends the request with all of it.
        var ignored = Run(new OutputProcessor(new SamplingParams { MaxTokens = 3, IgnoreEos = true }, eos, Tokenizer.CreateIncrementalDecoder()), tokens);
        Assert.Equal((FinishReason.Length, 3), (ignored.Finish!.Value, ignored.Tokens));
        Assert.Equal(Tokenizer.Decode(tokens.Take(3), skipSpecialTokens: true), ignored.Text);

        // Without a tokenizer there is no text, and the context limit ends it too.
        var bare = Run(new OutputProcessor(new SamplingParams { MaxTokens = 100 }, new HashSet<int>(), null), tokens, maxTotal: 12);
        Assert.Equal(("", FinishReason.Length, 2), (bare.Text, bare.Finish!.Value, bare.Tokens));
    }

    [Fact]
    public void Submission_limits_refuse_with_the_fix_and_say_when_to_borrow()
    {
        var limits = new RequestLimits(VocabSize: 100, MaxContextTokens: 64, BlockSize: 16, KvBlocks: 2, CanBorrow: false);
        Assert.Equal((20, false), limits.Check([1, 2, 3, 4], new SamplingParams { MaxTokens = 16 }));
        Assert.Contains("outside the vocabulary", Assert.Throws<EngineRequestException>(() => limits.Check([100], new SamplingParams())).Message, StringComparison.Ordinal);
        Assert.Contains("lower max_tokens to at most 54", Assert.Throws<EngineRequestException>(() => limits.Check(new int[10], new SamplingParams { MaxTokens = 60 })).Message, StringComparison.Ordinal);
        Assert.Contains("turn DistAttention on", Assert.Throws<EngineRequestException>(() => limits.Check(new int[40], new SamplingParams { MaxTokens = 4 })).Message, StringComparison.Ordinal);
        // With peers to borrow from, a sequence larger than the pool is planned instead of refused.
        Assert.Equal((44, true), (limits with { CanBorrow = true }).Check(new int[40], new SamplingParams { MaxTokens = 4 }));
    }
}
