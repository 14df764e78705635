// Where the worker's model comes from: a local directory as given, or an
// hf://ORG/NAME[@REV] source downloaded (or found) in the hub cache through
// Core's HubModelSource, with progress as structured log lines (every ~10% or
// few seconds). The engine host loads what this returns, and `--download-only`
// (the operator's init container) runs only this step and exits.
using System.Diagnostics;
using Platform.Core.Models.Hub;

namespace Platform.Worker;

internal static class WorkerModel
{
    /// <summary>The directory to load for <paramref name="source"/>.</summary>
    /// <exception cref="HubDownloadException">The download failed; logged already, the message says the fix.</exception>
    public static async Task<string> ResolveAsync(string source, ILogger logger, CancellationToken cancellationToken = default)
    {
        if (!HubModelReference.IsHubSource(source)) return source;
        var watch = Stopwatch.StartNew();
        try
        {
            string snapshot = await HubModelSource.ResolveAsync(source,
                p => Log.HubDownloadProgress(logger, source, p.TotalBytes <= 0 ? 100 : (int)(p.Bytes * 100 / p.TotalBytes), p.Bytes, p.TotalBytes, p.File),
                cancellationToken: cancellationToken).ConfigureAwait(false);
            Log.HubDownloaded(logger, source, snapshot, watch.Elapsed.TotalSeconds);
            return snapshot;
        }
        catch (HubDownloadException e)
        {
            Log.HubDownloadFailed(logger, source, e.Message);
            throw;
        }
    }

    /// <summary>`--download-only`: 0 when the model is in the cache (or the directory has a config.json), else 1 with the error on stderr.</summary>
    public static async Task<int> DownloadOnlyAsync(WorkerOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        try
        {
            string directory = await ResolveAsync(options.ModelDirectory, logger, cancellationToken).ConfigureAwait(false);
            if (!File.Exists(Path.Combine(directory, "config.json")))
            {
                await Console.Error.WriteLineAsync($"platform-worker: the model directory '{directory}' has no config.json.").ConfigureAwait(false);
                return 1;
            }
            return 0;
        }
        catch (HubDownloadException e)
        {
            await Console.Error.WriteLineAsync($"platform-worker: {e.Message}").ConfigureAwait(false);
            return 1;
        }
    }
}
