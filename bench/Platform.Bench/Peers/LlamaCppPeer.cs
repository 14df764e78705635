// llama.cpp as a peer: compiles llama_driver.cpp (copied next to the bench) against a llama.cpp build
// given by directory — headers from DIR/include and DIR/ggml/include, libraries from DIR/build/bin with
// the rpath set — once per source and build, then runs it on GGUF files.
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Platform.Bench.Peers;

/// <summary>One driver run: greedy ids, prompt-to-first-token and decode rate, and the wall time of the whole process.</summary>
internal sealed record LlamaCppResult(IReadOnlyList<int> Ids, double FirstTokenMs, double? DecodeTokensPerSecond, TimeSpan ProcessTime);

internal sealed class LlamaCppPeer
{
    public const string DriverSource = "llama_driver.cpp";

    public string Directory { get; }
    public string DriverPath { get; }

    private LlamaCppPeer(string directory, string driverPath)
    {
        Directory = directory;
        DriverPath = driverPath;
    }

    /// <summary>Compiles the driver against the build in <paramref name="llamaCppDir"/> (or reuses an earlier compile of the same source and build).</summary>
    public static async Task<LlamaCppPeer> PrepareAsync(string llamaCppDir, string cacheDir)
    {
        string dir = Path.GetFullPath(llamaCppDir);
        string bin = Path.Combine(dir, "build", "bin");
        if (!File.Exists(Path.Combine(bin, "libllama.so")))
            throw new ArgumentException($"{bin}/libllama.so not found: --peer-llamacpp takes a llama.cpp source directory built with cmake into build/ (shared libraries)");
        string source = Path.Combine(AppContext.BaseDirectory, "Peers", DriverSource);
        var ggmlLibraries = System.IO.Directory.GetFiles(bin, "libggml*.so").Select(Path.GetFileNameWithoutExtension)
            .Select(n => "-l" + n!["lib".Length..]).Order(StringComparer.Ordinal).ToList();
        string key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(File.ReadAllText(source) + dir
            + File.GetLastWriteTimeUtc(Path.Combine(bin, "libllama.so")).Ticks.ToString(CultureInfo.InvariantCulture))))[..16];
        System.IO.Directory.CreateDirectory(cacheDir);
        string driver = Path.Combine(cacheDir, $"llama_driver-{key}");
        if (!File.Exists(driver))
        {
            var compile = await PeerProcess.RunAsync("g++",
                ["-O2", "-std=c++17", source, "-o", driver + ".tmp",
                 "-I", Path.Combine(dir, "include"), "-I", Path.Combine(dir, "ggml", "include"),
                 "-L", bin, "-lllama", .. ggmlLibraries, $"-Wl,-rpath,{bin}"]);
            compile.EnsureSuccess("compiling the llama.cpp driver");
            File.Move(driver + ".tmp", driver);
        }
        return new LlamaCppPeer(dir, driver);
    }

    /// <summary>
    /// Greedy generation of <paramref name="tokens"/> ids after <paramref name="prompt"/>; with <paramref name="parallel"/> &gt; 1,
    /// that many sequences decode over the one prompt (evaluated once, its KV shared), one batch per step, and the decode rate
    /// counts every sequence's tokens (the ids are the first sequence's).
    /// </summary>
    public async Task<LlamaCppResult> GenerateAsync(string gguf, IReadOnlyList<int> prompt, int tokens, int threads, string kvType = "f32", int parallel = 1)
    {
        // The ids go through a file: one argument may hold at most 128 KB (a 32K prompt is ~160 KB of text).
        string promptFile = Path.Combine(Path.GetTempPath(), $"llama-driver-prompt-{Guid.NewGuid():N}.txt");
        await File.WriteAllTextAsync(promptFile, string.Join(',', prompt));
        PeerRun run;
        try
        {
            run = (await PeerProcess.RunAsync(DriverPath,
                ["--model", gguf, "--prompt-file", promptFile, "--predict", tokens.ToString(CultureInfo.InvariantCulture),
                 "--threads", threads.ToString(CultureInfo.InvariantCulture), "--kv", kvType,
                 "--parallel", parallel.ToString(CultureInfo.InvariantCulture),
                 "--ctx", (prompt.Count + (long)parallel * tokens + 16).ToString(CultureInfo.InvariantCulture)])).EnsureSuccess("the llama.cpp driver");
        }
        finally
        {
            File.Delete(promptFile);
        }
        var ids = Ids(run.Field("ids ") ?? throw new InvalidOperationException($"the llama.cpp driver printed no ids: {run.Stdout}"));
        double firstToken = double.Parse(run.Field("first_token_ms ")!, CultureInfo.InvariantCulture);
        double? decode = run.Field("decode_tokens_per_s ") is { } d ? double.Parse(d, CultureInfo.InvariantCulture) : null;
        return new LlamaCppResult(ids, firstToken, decode, run.Elapsed);
    }

    /// <summary>
    /// Teacher forcing: evaluates <paramref name="ids"/> as one batch and returns the top id after each prefix (element i
    /// is the argmax of the logits at position i).
    /// </summary>
    public async Task<IReadOnlyList<int>> ScoreAsync(string gguf, IReadOnlyList<int> ids, int threads)
    {
        var run = (await PeerProcess.RunAsync(DriverPath,
            ["--model", gguf, "--prompt-ids", string.Join(',', ids), "--score", "--threads", threads.ToString(CultureInfo.InvariantCulture),
             "--ctx", (ids.Count + 16).ToString(CultureInfo.InvariantCulture)])).EnsureSuccess("the llama.cpp driver (--score)");
        var top = Ids(run.Field("argmax ") ?? throw new InvalidOperationException($"the llama.cpp driver printed no argmax line: {run.Stdout}"));
        if (top.Count != ids.Count)
            throw new InvalidOperationException($"the llama.cpp driver scored {top.Count} positions of {ids.Count}");
        return top;
    }

    /// <summary>The driver's comma-separated token ids.</summary>
    private static List<int> Ids(string field) =>
        field.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();
}
