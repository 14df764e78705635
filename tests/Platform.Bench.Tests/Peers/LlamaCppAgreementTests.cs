// Optional: where a llama.cpp build is given (LLAMACPP_DIR, a source tree built into build/), the
// GGUF export of a random tiny model is run by the compiled driver and its greedy ids must equal the
// engine's, token for token; scored in one batch (--score), its top id after every prefix must equal
// the engine's teacher-forced top id. Without the variable the test says so in its output and checks nothing
// else: the suite does not depend on llama.cpp.
using Platform.Bench.Peers;
using Platform.Core.Models;
using Platform.Engine;
using Xunit.Abstractions;

namespace Platform.Bench.Tests.Peers;

public sealed class LlamaCppAgreementTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("llamacpp-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Llama_cpp_greedy_ids_equal_the_engine_s_on_the_f32_export()
    {
        if (await PrepareAsync(seed: 3) is not var (model, gguf, peer)) return;
        int[] prompt = [5, 77, 300, 12, 9, 41, 250, 3];
        const int tokens = 24;

        var theirs = await peer.GenerateAsync(gguf, prompt, tokens, threads: 2);
        using var engine = LlmEngine.Load(model, new EngineOptions { Threads = 2, NumKvBlocks = 16, DefaultSeed = 1 });
        var mine = await EngineDecode.RunAsync(engine, prompt, tokens);

        output.WriteLine($"engine:    {string.Join(',', mine.Ids)}");
        output.WriteLine($"llama.cpp: {string.Join(',', theirs.Ids)}");
        Assert.Equal(mine.Ids, theirs.Ids);
    }

    [Fact]
    public async Task Llama_cpp_sequences_sharing_a_prompt_each_decode_what_one_sequence_decodes()
    {
        // The driver's --parallel mode (bench engine's `context` peer case at batch > 1): the prompt's KV copied to the
        // other sequences, one batch per step. A wrong position or a sequence reading another's cells would change the ids.
        if (await PrepareAsync(seed: 7) is not var (model, gguf, peer)) return;
        int[] prompt = Enumerable.Range(0, 40).Select(i => 3 + i * 37 % 480).ToArray();
        const int tokens = 16;

        var alone = await peer.GenerateAsync(gguf, prompt, tokens, threads: 2);
        var shared = await peer.GenerateAsync(gguf, prompt, tokens, threads: 2, parallel: 3);
        using var engine = LlmEngine.Load(model, new EngineOptions { Threads = 2, NumKvBlocks = 16, DefaultSeed = 1 });
        var mine = await EngineDecode.RunAsync(engine, prompt, tokens);

        output.WriteLine($"engine:              {string.Join(',', mine.Ids)}");
        output.WriteLine($"llama.cpp, 1 seq:    {string.Join(',', alone.Ids)} ({alone.DecodeTokensPerSecond:F1} tok/s)");
        output.WriteLine($"llama.cpp, 3 seqs:   {string.Join(',', shared.Ids)} ({shared.DecodeTokensPerSecond:F1} tok/s)");
        Assert.Equal(mine.Ids, alone.Ids);
        Assert.Equal(alone.Ids, shared.Ids);
        Assert.True(shared.DecodeTokensPerSecond > 0);
    }

    [Fact]
    public async Task Llama_cpp_teacher_forced_top_ids_equal_the_engine_s_on_the_f32_export()
    {
        if (await PrepareAsync(seed: 5) is not var (model, gguf, peer)) return;
        var rng = new Random(11);
        int[] sequence = Enumerable.Range(0, 48).Select(_ => rng.Next(3, 500)).ToArray();

        var theirs = await peer.ScoreAsync(gguf, sequence, threads: 2);
        var mine = EngineDecode.TopIds(model, sequence, "float32", Platform.Engine.Model.Quantization.None);

        output.WriteLine($"engine:    {string.Join(',', mine)}");
        output.WriteLine($"llama.cpp: {string.Join(',', theirs)}");
        Assert.Equal(sequence.Length, theirs.Count);
        Assert.Equal(mine, theirs);
    }

    /// <summary>A random tiny model, its f32 GGUF export and the compiled driver; null (and a line saying so) without LLAMACPP_DIR.</summary>
    private async Task<(string Model, string Gguf, LlamaCppPeer Peer)?> PrepareAsync(ulong seed)
    {
        string? llamaCpp = Environment.GetEnvironmentVariable("LLAMACPP_DIR");
        if (string.IsNullOrEmpty(llamaCpp))
        {
            output.WriteLine("skipped: set LLAMACPP_DIR to a llama.cpp source tree built into build/ to run this check");
            return null;
        }
        string model = Path.Combine(_dir, "tiny");
        RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", Seed = seed });
        string gguf = Path.Combine(_dir, "tiny.f32.gguf");
        GgufExport.Write(model, gguf, GgmlType.F32);
        return (model, gguf, await LlamaCppPeer.PrepareAsync(llamaCpp, Path.Combine(_dir, "driver")));
    }
}
