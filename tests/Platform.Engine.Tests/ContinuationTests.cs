// A request continued from tokens it already generated (GenerationRequest.GeneratedTokens,
// what the router sends when it migrates a request off a dead worker) must go on exactly as
// the undisturbed run: the same tokens (greedy, and seeded sampling at temperature > 0 with
// penalties, since the draw for output i depends only on (seed, i)), and text that continues
// the text already streamed, with stop strings and held-back text carried across the cut.
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class ContinuationTests
{
    private static List<int> Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(3, 500)).ToList();
    }

    private static async Task<(List<int> Tokens, List<string> Texts, GenerationChunk Last)> Run(LlmEngine engine, GenerationRequest request)
    {
        var tokens = new List<int>();
        var texts = new List<string>();
        GenerationChunk? last = null;
        await foreach (var chunk in engine.GenerateAsync(request))
        {
            if (chunk.Progress is not null) continue;
            tokens.AddRange(chunk.TokenIds);
            texts.Add(chunk.Text);
            last = chunk;
        }
        return (tokens, texts, last!);
    }

    public static TheoryData<string, double> Samplings => new()
    {
        { "greedy", 0.0 },
        { "seeded", 0.9 },
    };

    [Theory]
    [MemberData(nameof(Samplings))]
    public async Task A_continuation_from_any_cut_yields_the_undisturbed_runs_tokens_and_text(string name, double temperature)
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        // The continuations run where a migrated request does: on another engine, which holds none of the reference's
        // blocks and prefills prompt + earlier outputs (its logits then differ from the decoded ones by rounding).
        using var next = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Prompt(40, 3);
        var sampling = new SamplingParams
        {
            MaxTokens = 24, Temperature = temperature, Seed = 99, IgnoreEos = true, TopK = 50,
            PresencePenalty = 0.3, FrequencyPenalty = 0.2, RepetitionPenalty = 1.1,
        };
        var reference = await Run(engine, new GenerationRequest(prompt, sampling));
        Assert.Equal(24, reference.Tokens.Count);
        string fullText = string.Concat(reference.Texts);

        foreach (int cut in new[] { 1, 7, 23 })
        {
            // What the client had at the cut: the first `cut` tokens and the text streamed with them.
            string streamed = string.Concat(reference.Texts.Take(cut));
            var continued = await Run(next, new GenerationRequest(prompt, sampling, GeneratedTokens: reference.Tokens.Take(cut).ToList()));
            Assert.Equal(reference.Tokens.Skip(cut), continued.Tokens);
            Assert.Equal(fullText, streamed + string.Concat(continued.Texts));
            // Outputs count the earlier tokens too; the prompt stays the prompt.
            Assert.Equal(24, continued.Last.CompletionTokens);
            Assert.Equal(prompt.Count, continued.Last.PromptTokens);
            Assert.Equal(FinishReason.Length, continued.Last.Finish);
        }
        _ = name;
    }

    [Fact]
    public async Task Held_back_text_of_a_possible_stop_string_continues_across_the_cut()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Prompt(30, 5);
        var probe = await Run(engine, new GenerationRequest(prompt, new SamplingParams { MaxTokens = 20, Temperature = 0, IgnoreEos = true }));
        string text = string.Concat(probe.Texts);
        // A stop string made of text the run produces late: everything before it streams with a hold-back.
        string stop = text.Length > 12 ? text.Substring(text.Length - 6, 5) : text;
        var sampling = new SamplingParams { MaxTokens = 20, Temperature = 0, IgnoreEos = true, StopStrings = [stop] };
        var reference = await Run(engine, new GenerationRequest(prompt, sampling));
        string fullText = string.Concat(reference.Texts);
        for (int cut = 1; cut < reference.Tokens.Count; cut += 3)
        {
            string streamed = string.Concat(reference.Texts.Take(cut));
            var continued = await Run(engine, new GenerationRequest(prompt, sampling, GeneratedTokens: reference.Tokens.Take(cut).ToList()));
            Assert.Equal(reference.Tokens.Skip(cut), continued.Tokens);
            Assert.Equal(fullText, streamed + string.Concat(continued.Texts));
            Assert.Equal(reference.Last.Finish, continued.Last.Finish);
        }
    }

    [Fact]
    public void Generated_tokens_that_already_end_the_request_are_refused()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var sampling = new SamplingParams { MaxTokens = 3, Temperature = 0, IgnoreEos = true };
        var e = Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest(Prompt(10, 1), sampling, GeneratedTokens: [5, 6, 7])));
        Assert.Contains("max_tokens", e.Message, StringComparison.Ordinal);
        var bad = Assert.Throws<EngineRequestException>(() => engine.GenerateAsync(new GenerationRequest(Prompt(10, 1), sampling, GeneratedTokens: [100_000])));
        Assert.Contains("vocabulary", bad.Message, StringComparison.Ordinal);
    }
}
