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
    /// <summary>The model directory of <paramref name="preset"/> stored as <paramref name="dtype"/> (default F32), created on first use.</summary>
    public static string Ensure(string preset, SafetensorsDtype dtype = SafetensorsDtype.F32)
    {
        string name = dtype == SafetensorsDtype.F32 ? $"bench-{preset}" : $"bench-{preset}-{dtype.ToString().ToLowerInvariant()}";
        string dir = Path.Combine(Environment.GetEnvironmentVariable("PLATFORM_CACHE")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "platform"), name);
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        AnsiConsole.MarkupLine($"[grey]creating the {preset} preset in {Markup.Escape(dir)}…[/]");
        RandomModelGenerator.Create(dir + ".tmp", new RandomModelOptions { Preset = preset, Seed = 1, Dtype = dtype });
        Directory.Move(dir + ".tmp", dir);
        return dir;
    }
}
