// Loading real model directories: dtypes, shards, and the clear errors for
// checkpoints that do not match their config, plus the CLI verbs end to end.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Platform.Core;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine.Scheduling;

namespace Platform.Engine.Tests;

public sealed class LoadingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("platform-load-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Copy(string source)
    {
        string dest = Path.Combine(_dir, Guid.NewGuid().ToString("n"));
        Directory.CreateDirectory(dest);
        foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(dest, Path.GetFileName(f)));
        return dest;
    }

    private static async Task<List<int>> Greedy(string dir, int count = 12)
    {
        using var engine = TestModels.Engine(dir);
        var tokens = new List<int>();
        await foreach (var c in engine.GenerateAsync(new GenerationRequest([5, 6, 7, 8, 9, 10, 11], new SamplingParams { MaxTokens = count, Temperature = 0, IgnoreEos = true })))
            tokens.AddRange(c.TokenIds);
        return tokens;
    }

    [Fact]
    public async Task Sharded_checkpoints_generate_the_same_tokens_as_single_files()
    {
        var single = await Greedy(TestModels.Get(TestModels.Tiny() with { Seed = 21 }));
        var sharded = await Greedy(TestModels.Get(TestModels.Tiny() with { Seed = 21, Shards = 3 }));
        Assert.Equal(single, sharded);
    }

    [Theory]
    [InlineData(SafetensorsDtype.F16)]
    [InlineData(SafetensorsDtype.BF16)]
    public void Half_precision_checkpoints_are_upcast_and_match_the_reference(SafetensorsDtype dtype)
    {
        string dir = TestModels.Get(TestModels.Tiny(dtype: dtype));
        var reference = new NaiveReference(dir).Logits([1, 2, 3, 4, 5]);
        var logits = Model.LogitsDump.Compute(dir, [1, 2, 3, 4, 5], TorchSharp.torch.float32);
        int vocab = logits.Length / 5;
        for (int t = 0; t < 5; t++) NumericsTests.AssertClose(reference[t], logits.AsSpan(t * vocab, vocab), $"{dtype} position {t}");
    }

    [Fact]
    public void A_tensor_with_the_wrong_shape_names_the_file_and_tensor()
    {
        string dir = Copy(TestModels.TinyLlama);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["intermediate_size"] = 96;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 8 }));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("mlp.gate_proj.weight", e.Message);
        Assert.Contains("[128, 64]", e.Message);
    }

    [Fact]
    public void A_missing_tensor_and_an_unknown_architecture_are_clear()
    {
        string dir = Copy(TestModels.TinyLlama);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["num_hidden_layers"] = 3;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        Assert.Contains("model.layers.2.", Assert.Throws<ModelLoadException>(() => LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 8 })).Message);
        config["model_type"] = "falcon";
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        Assert.Contains("'falcon' is not supported", Assert.Throws<ModelLoadException>(() => LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 8 })).Message);
    }

    [Fact]
    public void An_unreadable_tokenizer_is_a_model_load_error()
    {
        string dir = Copy(TestModels.TinyLlama);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{ \"model\": ");
        var e = Assert.ThrowsAny<ModelLoadException>(() => LlmEngine.Load(dir, new EngineOptions { NumKvBlocks = 8 }));
        Assert.Contains("tokenizer.json", e.Message);
    }

    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "platform.dll");

    private static (int Code, string Out, string Err) Cli(params string[] args) => Cli(new Dictionary<string, string>(), args);

    private static (int Code, string Out, string Err) Cli(Dictionary<string, string> environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "the CLI did not finish");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public async Task Cli_generate_json_and_logits_npy_agree_with_the_engine()
    {
        string dir = TestModels.TinyLlama;
        var (code, output, err) = Cli("generate", "--model", dir, "--prompt-ids", "5,6,7,8,9,10,11", "--max-tokens", "12", "--json");
        Assert.True(code == 0, err);
        using var json = JsonDocument.Parse(output);
        var ids = json.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToList();
        Assert.Equal(7, json.RootElement.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(0, json.RootElement.GetProperty("cached_tokens").GetInt32());
        Assert.NotNull(json.RootElement.GetProperty("text").GetString());
        using (var engine = TestModels.Engine(dir))
        {
            var expected = new List<int>();
            await foreach (var c in engine.GenerateAsync(new GenerationRequest([5, 6, 7, 8, 9, 10, 11], new SamplingParams { MaxTokens = 12, Temperature = 0 })))
                expected.AddRange(c.TokenIds);
            Assert.Equal(expected, ids);
        }

        string npy = Path.Combine(_dir, "logits.npy");
        (code, _, err) = Cli("model", "logits", "--model", dir, "--prompt-ids", "1,2,3", "--out", npy);
        Assert.True(code == 0, err);
        var (data, rows, cols) = Npy.ReadFloat32(npy);
        Assert.Equal((3, 512), (rows, cols));
        var reference = new NaiveReference(dir).Logits([1, 2, 3]);
        for (int t = 0; t < 3; t++) NumericsTests.AssertClose(reference[t], data.AsSpan(t * cols, cols), $"npy row {t}");

        (code, _, err) = Cli("generate", "--model", Path.Combine(_dir, "nope"), "--prompt-ids", "1");
        Assert.Equal(2, code);
        Assert.Contains("config.json is missing", err);
    }

    [Fact]
    public void Cli_generate_loads_libtorch_with_passive_openmp_waiting_and_reports_its_start_phases()
    {
        // libgomp reads OMP_WAIT_POLICY once, when libtorch loads; OMP_DISPLAY_ENV=VERBOSE makes it print what it
        // took. Spinning workers (GOMP_SPINCOUNT 300000 when the variable came too late) cost ~0.9 s of CPU
        // before the first token on two cores (docs/engine.md, "Start").
        var environment = new Dictionary<string, string> { ["OMP_DISPLAY_ENV"] = "VERBOSE" };
        var (code, output, err) = Cli(environment, "generate", "--model", TestModels.TinyLlama, "--prompt-ids", "5,6,7", "--max-tokens", "2", "--json", "--timings");
        Assert.True(code == 0, err);
        Assert.Contains("GOMP_SPINCOUNT = '0'", err);

        // The phases go to stderr; stdout stays one JSON object.
        using var json = JsonDocument.Parse(output);
        Assert.Equal(2, json.RootElement.GetProperty("token_ids").GetArrayLength());
        var phases = err.Split('\n').Where(l => l.StartsWith("  ", StringComparison.Ordinal)
            && !l.Contains("OMP", StringComparison.Ordinal) && !l.Contains("GOMP", StringComparison.Ordinal)).ToList();
        foreach (var phase in new[] { "command line", "config and checkpoint map", "libtorch", "weights", "(tokenizer, beside the others)", "waiting for the checkpoint's pages", "KV pool and engine thread", "first token (prefill)" })
            Assert.Contains(phases, l => l.TrimStart().StartsWith(phase, StringComparison.Ordinal));
        // libtorch's static constructors allocate into a heap advised MADV_HUGEPAGE (NativeRuntime.PrepareHeap), unless
        // transparent huge pages are off on this kernel.
        string thp = File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") ? File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled") : "[never]";
        if (OperatingSystem.IsLinux() && !thp.Contains("[never]", StringComparison.Ordinal))
            Assert.Contains("malloc heap libtorch loaded into: 2 MB pages", err);
    }
}
