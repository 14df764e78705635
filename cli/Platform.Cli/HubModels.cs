// `--model hf://ORG/NAME[@REV]` for the CLI: downloads through Core's
// HubDownloader (the same code the worker, the router and the operator's
// download step use) with a byte progress bar on stderr, and returns the
// snapshot directory; a local directory passes through unchanged. A failed
// download is one clear line, never a stack trace.
using Platform.Core.Models.Hub;
using Spectre.Console;

namespace Platform.Cli;

internal static class HubModels
{
    /// <summary>The local model directory for <paramref name="source"/>; null (after printing why) when it cannot be had.</summary>
    public static async Task<string?> ResolveAsync(string source, CancellationToken cancellationToken)
    {
        if (!HubModelReference.IsHubSource(source)) return source;
        HubModelReference model;
        HubSettings settings;
        try
        {
            model = HubModelReference.Parse(source);
            settings = HubSettings.FromEnvironment();
        }
        catch (ArgumentException e)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}");
            return null;
        }
        using var http = HubDownloader.CreateHttpClient();
        var downloader = new HubDownloader(http, settings);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        try
        {
            string? snapshot = null;
            await console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape($"downloading {model}"), maxValue: 1);
                    snapshot = await downloader.DownloadAsync(model, new Progress<HubDownloadProgress>(p =>
                    {
                        task.MaxValue = Math.Max(1, p.TotalBytes);
                        task.Value = p.Bytes;
                        task.Description = Markup.Escape($"{model}: {p.File}");
                    }), cancellationToken).ConfigureAwait(false);
                    task.Value = task.MaxValue;
                }).ConfigureAwait(false);
            return snapshot;
        }
        catch (HubDownloadException e)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}");
            return null;
        }
    }
}
