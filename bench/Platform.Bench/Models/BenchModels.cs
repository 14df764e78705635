// The random-weight models the benchmarks run, created once per preset in the
// cache directory ($PLATFORM_CACHE, else ~/.cache/platform) and reused. Apart
// from the benchmarks themselves so that every mode (engine, kvtier, dist,
// router) can use it without the modes depending on each other.
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Spectre.Console;

namespace Platform.Bench.Models;

internal static class BenchModels
{
    /// <summary>Where bench models and their exports live: $PLATFORM_CACHE, else ~/.cache/platform.</summary>
    public static string CacheRoot => Environment.GetEnvironmentVariable("PLATFORM_CACHE")
        ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "platform");

    /// <summary>The model directory of <paramref name="preset"/> stored as <paramref name="dtype"/> (default F32), created on first use.</summary>
    public static string Ensure(string preset, SafetensorsDtype dtype = SafetensorsDtype.F32)
    {
        string name = dtype == SafetensorsDtype.F32 ? $"bench-{preset}" : $"bench-{preset}-{dtype.ToString().ToLowerInvariant()}";
        string dir = Path.Combine(CacheRoot, name);
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        AnsiConsole.MarkupLine($"[grey]creating the {preset} preset in {Markup.Escape(dir)}…[/]");
        RandomModelGenerator.Create(dir + ".tmp", new RandomModelOptions { Preset = preset, Seed = 1, Dtype = dtype });
        Directory.Move(dir + ".tmp", dir);
        return dir;
    }

    /// <summary>
    /// A prompt of <paramref name="tokens"/> random ordinary token ids (below the model's first special token), drawn from
    /// <paramref name="seed"/>: with a seed of its own, no 16-token block is shared with another prompt, so nothing is a prefix-cache hit.
    /// </summary>
    public static int[] RandomPrompt(string modelDir, int tokens, int seed)
    {
        int firstSpecial = FirstSpecialTokenId(modelDir);
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, tokens).Select(_ => rng.Next(0, firstSpecial))];
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> FirstSpecial = new(StringComparer.Ordinal);

    /// <summary>The lowest special token id of the model's tokenizer (read once per model).</summary>
    private static int FirstSpecialTokenId(string modelDir) => FirstSpecial.GetOrAdd(modelDir, dir =>
    {
        var tokenizer = Platform.Core.Tokenization.HfTokenizer.Load(dir);
        return Enumerable.Range(0, tokenizer.VocabSize).First(tokenizer.IsSpecial);
    });
}
