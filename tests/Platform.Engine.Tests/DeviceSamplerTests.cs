// DeviceSampler draws, with tensor ops where the logits are, the token the host Sampler draws: for random and for
// tied logits, every combination of temperature, top-k, top-p and min-p, greedy rows mixed in, many seeds and
// output indices. And through the engine: with SampleOnDevice set (the device path on cpu), seeded requests of every
// kind give the host sampler's tokens, rows that need their logits on the host (logprobs, penalties) included.
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;
using TorchSharp;
using Xunit.Abstractions;

namespace Platform.Engine.Tests;

public sealed class DeviceSamplerTests(ITestOutputHelper output)
{
    private static readonly (double Temperature, int TopK, double TopP, double MinP)[] Settings =
    [
        (0, 0, 1, 0), (0.7, 1, 1, 0), (1.0, 0, 1, 0), (0.8, 0, 0.9, 0), (1.3, 40, 1, 0), (0.6, 5, 0.5, 0),
        (1.0, 0, 1, 0.05), (0.9, 20, 0.95, 0.02), (2.0, 0, 0.3, 0), (0.5, 1000, 0.99, 0.1),
    ];

    [Theory]
    [InlineData(1000, false)]
    [InlineData(32000, false)]
    [InlineData(512, true)]
    public void Draws_the_host_samplers_token_for_every_setting(int vocab, bool ties)
    {
        var rng = new Random(vocab + (ties ? 1 : 0));
        var host = new Sampler();
        int draws = 0;
        for (int round = 0; round < 12; round++)
        {
            int rows = Settings.Length;
            var logits = new float[rows * vocab];
            for (int i = 0; i < logits.Length; i++)
                logits[i] = ties ? rng.Next(0, 6) * 0.5f : (float)(rng.NextDouble() * 8 - 4) * (round % 3 + 1);
            var parameters = Settings.Select((s, i) => new DeviceSampler.Row(s.Temperature, s.TopK, s.TopP, s.MinP,
                (ulong)rng.NextInt64(), rng.Next(0, 5000))).ToList();
            using var tensor = torch.tensor(logits, [rows, vocab]);
            int[] device = DeviceSampler.Sample(tensor, parameters);
            for (int r = 0; r < rows; r++)
            {
                var p = parameters[r];
                int expected = host.Sample(logits.AsSpan(r * vocab, vocab), p.Temperature, p.TopK, p.TopP, p.Seed, p.OutputIndex, p.MinP);
                Assert.True(expected == device[r], $"round {round}, row {r} ({Settings[r]}): host {expected}, device {device[r]}");
                draws++;
            }
        }
        output.WriteLine($"{draws} draws over a vocabulary of {vocab}{(ties ? " with ties" : "")}: all equal to the host sampler's");
    }

    [Fact]
    public void Rejects_logits_that_do_not_match_the_rows()
    {
        using var tensor = torch.zeros(3, 10);
        var e = Assert.Throws<ArgumentException>(() => DeviceSampler.Sample(tensor, [new DeviceSampler.Row(1, 0, 1, 0, 1, 0)]));
        Assert.Contains("[1, vocab]", e.Message);
    }

    [Fact]
    public async Task The_engine_sampling_on_the_device_gives_the_host_samplers_tokens()
    {
        SamplingParams Sampled(double t, int k, double p, double minP, ulong seed) =>
            new() { MaxTokens = 12, Temperature = t, TopK = k, TopP = p, MinP = minP, Seed = seed, IgnoreEos = true };
        var requests = new List<(List<int> Prompt, SamplingParams Sampling)>();
        var rng = new Random(23);
        List<int> Prompt(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(0, 500)).ToList();
        requests.Add((Prompt(7), new SamplingParams { MaxTokens = 12, Temperature = 0, IgnoreEos = true }));
        requests.Add((Prompt(30), Sampled(0.8, 0, 0.9, 0, 42)));
        requests.Add((Prompt(12), Sampled(1.2, 20, 1, 0, 7)));
        requests.Add((Prompt(21), Sampled(1.0, 0, 1, 0.05, 9)));
        // Needs its logits on the host: any step it is in samples every row there.
        requests.Add((Prompt(9), Sampled(0.9, 0, 0.95, 0, 3) with { Logprobs = 2 }));

        async Task<List<List<int>>> Generate(bool onDevice)
        {
            using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 64, MaxBatchTokens = 24, DefaultSeed = 1, TargetStepMs = 0 });
            engine.SampleOnDevice = onDevice;
            return await DeviceEngineTests.GenerateAllAsync(engine, requests);
        }

        var onHost = await Generate(false);
        var onDevice = await Generate(true);
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.Equal(12, onDevice[i].Count);
            Assert.Equal(onHost[i], onDevice[i]);
        }
    }
}
