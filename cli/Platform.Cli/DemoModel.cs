// The demo model: a small random-weight Llama created on first use under the
// user's cache folder, so the main command works on a fresh machine with no
// model download.
using Platform.Core.Models;
using Spectre.Console;

namespace Platform.Cli;

internal static class DemoModel
{
    public static string DefaultDirectory =>
        Path.Combine(Environment.GetEnvironmentVariable("PLATFORM_CACHE")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "platform"), "demo-small");

    public static string Ensure()
    {
        string dir = DefaultDirectory;
        if (File.Exists(Path.Combine(dir, "config.json")) && Directory.GetFiles(dir, "*.safetensors").Length > 0) return dir;
        AnsiConsole.MarkupLine($"[grey]Creating the demo model (random weights, small preset) in {Markup.Escape(dir)}[/]");
        string tmp = dir + ".tmp";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        ModelCommands.CreateWithProgress(tmp, new RandomModelOptions { Preset = "small", Seed = 1 });
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.Move(tmp, dir);
        return dir;
    }
}
