// `--model hf://ORG/NAME[@REV]` for the long-running binaries (platform-worker,
// platform-router, and their `--download-only` init step in a pod): resolves
// the source to the snapshot directory through HubDownloader with HF_* from the
// environment, and reports progress at a pace fit for a log (every ~10% of the
// bytes or every few seconds, whichever comes first), not per buffer. A local
// directory passes through unchanged. The served name of a hub model is its
// repo id (ORG/NAME), as vLLM names it, never the snapshot folder's commit hash.
// The router asks for the text files only (configs, tokenizer): no weights.
namespace Platform.Core.Models.Hub;

public static class HubModelSource
{
    /// <summary>The name clients use for <paramref name="source"/> when none is configured: ORG/NAME for hf://, else the directory's name.</summary>
    public static string DefaultServedName(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (HubModelReference.IsHubSource(source))
        {
            try { return HubModelReference.Parse(source).RepoId; }
            catch (ArgumentException) { return source; }
        }
        return Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(source.Length == 0 ? "." : source)));
    }

    /// <summary>
    /// The local directory for <paramref name="source"/>: a hub source is downloaded (or found in the cache); a
    /// directory is returned as is. <paramref name="report"/> hears throttled progress and, last, the total.
    /// </summary>
    /// <param name="withoutWeights">Fetch only configs and tokenizer files (the router's needs), not the *.safetensors.</param>
    /// <exception cref="HubDownloadException">The download failed, or the source or HF_* settings are malformed (message says the fix).</exception>
    public static async Task<string> ResolveAsync(string source, Action<HubDownloadProgress>? report = null, Func<string, string?>? environment = null,
        TimeSpan? reportEvery = null, bool withoutWeights = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!HubModelReference.IsHubSource(source)) return source;
        HubModelReference model;
        HubSettings settings;
        try
        {
            model = HubModelReference.Parse(source);
            settings = HubSettings.FromEnvironment(environment);
        }
        catch (ArgumentException e)
        {
            throw new HubDownloadException(e.Message, e);
        }
        using var http = HubDownloader.CreateHttpClient();
        var throttle = report is null ? null : new ThrottledProgress(report, reportEvery ?? TimeSpan.FromSeconds(5));
        var downloader = new HubDownloader(http, settings) { Include = withoutWeights ? HubDownloader.IsTextFile : _ => true };
        string snapshot = await downloader.DownloadAsync(model, throttle, cancellationToken).ConfigureAwait(false);
        throttle?.Finish();
        return snapshot;
    }

    /// <summary>Passes a report on when it crosses the next tenth of the bytes or the period has passed (thread-safe: the downloader reports from the pool).</summary>
    private sealed class ThrottledProgress(Action<HubDownloadProgress> report, TimeSpan period) : IProgress<HubDownloadProgress>
    {
        private readonly Lock _lock = new();
        private long _lastTime = System.Diagnostics.Stopwatch.GetTimestamp();
        private int _lastTenth = -1;
        private HubDownloadProgress? _last;
        private bool _finished;

        public void Report(HubDownloadProgress value)
        {
            lock (_lock)
            {
                if (_finished) return;
                if (_last is { } previous && value.Bytes < previous.Bytes) return; // a late report from an earlier file
                _last = value;
                int tenth = value.TotalBytes <= 0 ? 10 : (int)(value.Bytes * 10 / value.TotalBytes);
                bool due = System.Diagnostics.Stopwatch.GetElapsedTime(_lastTime) >= period;
                if (tenth <= _lastTenth && !due) return;
                _lastTenth = Math.Max(_lastTenth, tenth);
                _lastTime = System.Diagnostics.Stopwatch.GetTimestamp();
                if (tenth < 10) report(value);
            }
        }

        /// <summary>The final report (100%), exactly once.</summary>
        public void Finish()
        {
            lock (_lock)
            {
                if (_finished) return;
                _finished = true;
                if (_last is { } last) report(last with { Bytes = last.TotalBytes, FileBytes = last.FileSize });
            }
        }
    }
}
