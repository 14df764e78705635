// Loads an engine with a progress bar on stderr (stdout stays clean for --json),
// and turns a bad model directory into one clear line instead of a stack trace.
// When stderr is not a terminal (a script, the bench's start row) nobody sees the
// bar, so none is drawn: setting up Spectre's live display and its render thread
// took 40-60 ms of a loaded machine's start (`generate --timings`, "other load work").
using Platform.Engine;
using Spectre.Console;

namespace Platform.Cli;

internal static class ModelLoading
{
    public static LlmEngine LoadEngine(string dir, EngineOptions options)
    {
        if (Console.IsErrorRedirected) return LlmEngine.Load(dir, options);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        LlmEngine? engine = null;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"loading {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))}", maxValue: 1.0);
                engine = LlmEngine.Load(dir, options, new Progress<double>(p => task.Value = p));
                task.Value = 1.0;
            });
        return engine!;
    }

    public static IReadOnlyList<int> ParseIds(string text)
    {
        try
        {
            return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        }
        catch (FormatException)
        {
            throw new ArgumentException($"--prompt-ids must be comma-separated integers such as 1,2,3; got '{text}'.");
        }
    }
}
