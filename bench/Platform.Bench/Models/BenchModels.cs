// The random-weight models the benchmarks run, created once per preset in the
// cache directory ($PLATFORM_CACHE, else ~/.cache/platform) and reused. Apart
// from the benchmarks themselves so that every mode (engine, kvtier, dist,
// router) can use it without the modes depending on each other.
using Platform.Core.Models;
using Spectre.Console;

namespace Platform.Bench.Models;

internal static class BenchModels
{
    /// <summary>The model directory of <paramref name="preset"/>, created on first use.</summary>
    public static string Ensure(string preset)
    {
        string dir = Path.Combine(Environment.GetEnvironmentVariable("PLATFORM_CACHE")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "platform"), $"bench-{preset}");
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        AnsiConsole.MarkupLine($"[grey]creating the {preset} preset in {Markup.Escape(dir)}…[/]");
        RandomModelGenerator.Create(dir + ".tmp", new RandomModelOptions { Preset = preset, Seed = 1 });
        Directory.Move(dir + ".tmp", dir);
        return dir;
    }
}
