// Log-probabilities of sampled tokens (OpenAI's logprobs / top_logprobs): checked against libtorch's
// log_softmax in float64 of the very logits each token was sampled from, for a greedy run of the tiny
// model; from the raw logits even when logit_bias and penalties reshape the sampler's row (vLLM's
// default raw_logprobs); top alternatives sorted, ties broken by id; nothing computed when not asked.
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;
using TorchSharp;

namespace Platform.Engine.Tests.Sampling;

public sealed class LogprobsTests
{
    private static readonly int[] Prompt = [5, 6, 7, 8, 9, 10];

    private static async Task<(List<int> Tokens, List<float[]> Logits, List<TokenLogprobs> Logprobs)> RunAsync(LlmEngine engine, SamplingParams sampling)
    {
        var tokens = new List<int>();
        var logits = new List<float[]>();
        var logprobs = new List<TokenLogprobs>();
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt, sampling, ReturnLogits: true)))
        {
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
            if (sampling.Logprobs is not null) Assert.Equal(chunk.TokenIds.Count, chunk.Logprobs?.Count ?? 0);
            if (chunk.Logprobs is not null) logprobs.AddRange(chunk.Logprobs);
        }
        return (tokens, logits, logprobs);
    }

    private static double[] LogSoftmax(float[] logits)
    {
        using var t = torch.tensor(logits).to(torch.float64);
        using var ls = t.log_softmax(0);
        return ls.data<double>().ToArray();
    }

    [Fact]
    public async Task Greedy_logprobs_equal_log_softmax_of_the_logits_and_the_top_list_starts_with_the_sampled_token()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        var (tokens, logits, logprobs) = await RunAsync(engine, new SamplingParams { MaxTokens = 6, Temperature = 0, IgnoreEos = true, Logprobs = 5 });
        Assert.Equal(6, tokens.Count);
        Assert.Equal(tokens.Count, logprobs.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var reference = LogSoftmax(logits[i]);
            var lp = logprobs[i];
            Assert.Equal(reference[tokens[i]], lp.Logprob, 4);
            Assert.Equal(5, lp.TopTokenIds.Count);
            Assert.Equal(tokens[i], lp.TopTokenIds[0]);
            var expectedTop = Enumerable.Range(0, reference.Length).OrderByDescending(j => reference[j]).ThenBy(j => j).Take(5).ToArray();
            Assert.Equal(expectedTop, lp.TopTokenIds);
            for (int k = 0; k < 5; k++)
            {
                Assert.Equal(reference[lp.TopTokenIds[k]], lp.TopLogprobs[k], 4);
                if (k > 0) Assert.True(lp.TopLogprobs[k] <= lp.TopLogprobs[k - 1]);
            }
        }
    }

    [Fact]
    public async Task Logprobs_come_from_the_raw_logits_not_from_the_biased_penalised_and_tempered_row()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        // Reference: the raw logits of the first step (same prompt, nothing applied).
        var (_, plainLogits, _) = await RunAsync(engine, new SamplingParams { MaxTokens = 1, Temperature = 0, IgnoreEos = true });
        var reference = LogSoftmax(plainLogits[0]);

        var shaped = new SamplingParams
        {
            MaxTokens = 1, Temperature = 0.3, Seed = 3, IgnoreEos = true, Logprobs = 3,
            LogitBias = new Dictionary<int, float> { [42] = 100 }, RepetitionPenalty = 2, PresencePenalty = 1,
        };
        var (tokens, _, logprobs) = await RunAsync(engine, shaped);
        Assert.Equal(42, tokens[0]);
        Assert.Equal(reference[42], logprobs[0].Logprob, 4);
        var expectedTop = Enumerable.Range(0, reference.Length).OrderByDescending(j => reference[j]).ThenBy(j => j).Take(3).ToArray();
        Assert.Equal(expectedTop, logprobs[0].TopTokenIds);
    }

    [Fact]
    public async Task A_request_that_does_not_ask_gets_no_logprobs_and_zero_alternatives_give_only_the_sampled_one()
    {
        using var engine = TestModels.Engine(TestModels.TinyLlama);
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(Prompt, new SamplingParams { MaxTokens = 3, Temperature = 0, IgnoreEos = true })))
            Assert.Null(chunk.Logprobs);
        var (tokens, _, logprobs) = await RunAsync(engine, new SamplingParams { MaxTokens = 3, Temperature = 1, Seed = 9, IgnoreEos = true, Logprobs = 0 });
        Assert.Equal(3, logprobs.Count);
        Assert.All(logprobs, lp => Assert.Empty(lp.TopTokenIds));
        Assert.All(logprobs, lp => Assert.True(lp.Logprob <= 0));
        Assert.Equal(3, tokens.Count);
    }

    [Fact]
    public void Compute_matches_a_hand_computation_and_breaks_ties_by_id()
    {
        float[] logits = [1f, 3f, 3f, -2f, 0.5f];
        double lse = Math.Log(logits.Sum(l => Math.Exp(l)));
        var lp = TokenLogprobs.Compute(logits, token: 4, top: 3);
        Assert.Equal(0.5 - lse, lp.Logprob, 5);
        Assert.Equal([1, 2, 0], lp.TopTokenIds);
        Assert.Equal(3 - lse, lp.TopLogprobs[0], 5);
        Assert.Equal(3 - lse, lp.TopLogprobs[1], 5);
        Assert.Equal(1 - lse, lp.TopLogprobs[2], 5);
        Assert.Empty(TokenLogprobs.Compute(logits, 0, 0).TopTokenIds);
        Assert.Throws<EngineRequestException>(() => new SamplingParams { Logprobs = 21 }.Validate());
        Assert.Throws<EngineRequestException>(() => new SamplingParams { Logprobs = -1 }.Validate());
    }
}
