// logit_bias, and the sampling penalties against a hand computation: repetition over prompt and output tokens
// (positive logits divided, negative multiplied), then frequency × count and presence once for
// generated tokens; tokens never seen are untouched, and later steps see only new tokens added.
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests.Sampling;

public sealed class PenaltyTests
{
    [Fact]
    public void Penalties_match_a_hand_computation_and_follow_the_sequence_as_it_grows()
    {
        // Prompt [1, 2]; outputs so far [3, 3, 1].
        var tokens = new List<int> { 1, 2, 3, 3, 1 };
        var state = new PenaltyState(tokens, promptLength: 2);
        float[] logits = [0.5f, 2f, -1f, 4f, 3f];
        state.Apply(logits, tokens, presence: 0.5, frequency: 0.25, repetition: 2);
        Assert.Equal(0.5f, logits[0], 6);                  // never seen
        Assert.Equal(2f / 2 - (0.25f * 1 + 0.5f), logits[1], 6); // prompt and output once
        Assert.Equal(-1f * 2, logits[2], 6);                // prompt only: repetition, no presence
        Assert.Equal(4f / 2 - (0.25f * 2 + 0.5f), logits[3], 6); // generated twice
        Assert.Equal(3f, logits[4], 6);                     // never seen

        // One more output token (4): only it is added to the state.
        tokens.Add(4);
        float[] next = [0f, 0f, 0f, 0f, 3f];
        state.Apply(next, tokens, presence: 1, frequency: 0, repetition: 1);
        Assert.Equal([0f, -1f, 0f, -1f, 2f], next);
    }

    [Fact]
    public async Task A_strong_repetition_penalty_changes_a_greedy_run_that_repeats_itself()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var prompt = Enumerable.Range(0, 12).Select(i => (i * 7 + 3) % 500).ToList();
        async Task<List<int>> Greedy(double presence, double repetition)
        {
            var tokens = new List<int>();
            var sampling = new SamplingParams { MaxTokens = 24, Temperature = 0, IgnoreEos = true, PresencePenalty = presence, RepetitionPenalty = repetition };
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, sampling))) tokens.AddRange(chunk.TokenIds);
            return tokens;
        }
        var plain = await Greedy(0, 1);
        var penalised = await Greedy(2, 10);
        Assert.Equal(24, penalised.Count);
        // Penalties only ever push seen tokens down: the penalised run repeats no more than the plain one.
        Assert.True(penalised.Distinct().Count() >= plain.Distinct().Count(), $"plain {string.Join(',', plain)}; penalised {string.Join(',', penalised)}");
        if (plain.Distinct().Count() < plain.Count) Assert.NotEqual(plain, penalised);
    }

    [Fact]
    public async Task A_logit_bias_of_100_makes_greedy_decoding_pick_that_token()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var sampling = new SamplingParams { MaxTokens = 6, Temperature = 0, IgnoreEos = true, LogitBias = new Dictionary<int, float> { [42] = 100 } };
        var tokens = new List<int>();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest([5, 6, 7, 8], sampling))) tokens.AddRange(chunk.TokenIds);
        Assert.Equal(Enumerable.Repeat(42, 6), tokens);
        Assert.Throws<EngineRequestException>(() => new SamplingParams { LogitBias = new Dictionary<int, float> { [1] = 101 } }.Validate());
    }

    [Fact]
    public void Penalties_are_validated_as_the_api_bounds_them()
    {
        new SamplingParams { PresencePenalty = 2, FrequencyPenalty = -2, RepetitionPenalty = 1.3 }.Validate();
        Assert.Throws<EngineRequestException>(() => new SamplingParams { PresencePenalty = 2.5 }.Validate());
        Assert.Throws<EngineRequestException>(() => new SamplingParams { FrequencyPenalty = double.NaN }.Validate());
        Assert.Throws<EngineRequestException>(() => new SamplingParams { RepetitionPenalty = 0 }.Validate());
        Assert.False(PenaltyState.Needed(0, 0, 1));
        Assert.True(PenaltyState.Needed(0, 0, 1.1));
    }
}
