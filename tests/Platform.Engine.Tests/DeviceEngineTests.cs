// The whole engine (scheduler, chunked prefill, batched decode, sampling) on the
// device-generic path, on the test device: greedy requests of unequal prompts,
// prefilled in chunks beside running decodes, give the tokens the native cpu
// engine gives; a seeded sampled request too (the same counter-based sampler
// draws). Off cpu the rows are sampled on the device (DeviceSampler), so on a
// GPU this compares that as well.
using Platform.Engine.Model;
using Platform.Engine.Scheduling;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class DeviceEngineTests(ITestOutputHelper output)
{
    private static async Task<List<List<int>>> Generate(ForwardPath path, string device, IReadOnlyList<(List<int> Prompt, SamplingParams Sampling)> requests)
    {
        using var engine = LlmEngine.Load(TestModels.TinyLlama, new EngineOptions
        {
            NumKvBlocks = 64, Threads = 2, DefaultSeed = 1, MaxBatchTokens = 24, TargetStepMs = 0, Device = device,
        });
        engine.ForwardPath = path;
        return await GenerateAllAsync(engine, requests);
    }

    /// <summary>Runs every request at once on <paramref name="engine"/>; each one's tokens, in request order.</summary>
    internal static async Task<List<List<int>>> GenerateAllAsync(LlmEngine engine, IReadOnlyList<(List<int> Prompt, SamplingParams Sampling)> requests) =>
        [.. await Task.WhenAll(requests.Select(async r =>
        {
            var tokens = new List<int>();
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(r.Prompt, r.Sampling)))
            {
                Assert.Null(chunk.Error);
                tokens.AddRange(chunk.TokenIds);
            }
            return tokens;
        }))];

    [Fact]
    public async Task The_generic_path_generates_the_tokens_of_the_native_cpu_engine()
    {
        var greedy = new SamplingParams { MaxTokens = 10, Temperature = 0, IgnoreEos = true };
        var sampled = new SamplingParams { MaxTokens = 10, Temperature = 0.8, TopP = 0.9, Seed = 42, IgnoreEos = true };
        var rng = new Random(17);
        List<int> Prompt(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(0, 500)).ToList();
        var requests = new List<(List<int>, SamplingParams)> { (Prompt(5), greedy), (Prompt(40), greedy), (Prompt(19), greedy), (Prompt(30), sampled) };

        var native = await Generate(ForwardPath.Native, "cpu", requests);
        var generic = await Generate(ForwardPath.Generic, TestDevice.Name, requests);
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.Equal(10, generic[i].Count);
            Assert.Equal(native[i], generic[i]);
        }
        output.WriteLine($"{TestDevice.Describe()}; {requests.Count} requests, 10 tokens each, equal to the native cpu engine's");
    }
}
