// Downloads a model repository from a Hugging Face-style hub into the standard
// hub cache, the way huggingface_hub does, so `platform model download`,
// `platform up --model hf://…` and the operator's download step share one path:
//   1. GET api/models/REPO/revision/REV: the commit the revision points at, and the files.
//   2. Keep the files a model directory needs (configs, tokenizer files, chat
//      templates, safetensors weights); refuse a repository without config.json.
//   3. Per file, HEAD resolve/COMMIT/FILE without following redirects: its ETag
//      (X-Linked-Etag for LFS files: the sha256), size and download location.
//   4. A blob already in the cache is not fetched again. Otherwise GET it into
//      blobs/ETAG.incomplete, resuming with a Range request where a previous run
//      stopped; the Authorization header never follows a redirect to another host.
//   5. Check the bytes: sha256 for LFS files, the git blob sha1 for the others. A
//      mismatch deletes the file and fails with what was expected and found.
//   6. snapshots/COMMIT/FILE links to the blob; refs/REV records the commit.
// Processes that share a cache (pods on one volume) take a lock per blob
// (.locks/REPO/ETAG.lock, where huggingface_hub keeps its own), so one fetches
// and the others then find the blob.
// With HF_HUB_OFFLINE the cache alone answers. Errors say what to do: a token for
// a private or gated repository, a different name or revision, a mirror.
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;

namespace Platform.Core.Models.Hub;

/// <summary>Progress of a download: the current file and the bytes so far, of it and of everything.</summary>
public readonly record struct HubDownloadProgress(string File, long FileBytes, long FileSize, long Bytes, long TotalBytes);

/// <summary>A download that cannot go on; the message says why and what to do.</summary>
public sealed class HubDownloadException(string message, Exception? inner = null) : Exception(message, inner);

public sealed class HubDownloader
{
    private const int BufferBytes = 1 << 20;
    private readonly HttpClient _http;
    private readonly HubSettings _settings;

    /// <param name="http">A client whose handler does not follow redirects (<see cref="CreateHttpClient"/>).</param>
    public HubDownloader(HttpClient http, HubSettings settings)
    {
        _http = http;
        _settings = settings;
    }

    /// <summary>The client the downloader expects: redirects are followed by the downloader itself.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "The client owns the handler (disposeHandler: true).")]
    public static HttpClient CreateHttpClient()
    {
        var handler = new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None, ConnectTimeout = TimeSpan.FromSeconds(30) };
        var client = new HttpClient(handler, disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        client.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("platform", "1.0"));
        return client;
    }

    /// <summary>
    /// Which of the model files to fetch (default all of <see cref="IsModelFile"/>); the router, which reads only the
    /// tokenizer and configs, passes <see cref="IsTextFile"/> so its pod does not download the weights.
    /// </summary>
    public Func<string, bool> Include { get; init; } = _ => true;

    /// <summary>A model file that is not weights: configs, tokenizer files, chat templates.</summary>
    public static bool IsTextFile(string path) => IsModelFile(path) && !path.EndsWith(".safetensors", StringComparison.Ordinal);

    /// <summary>Whether a file of the repository belongs in a model directory the engine and router load.</summary>
    public static bool IsModelFile(string path)
    {
        if (path.Contains('/', StringComparison.Ordinal)) return false; // sub-folders hold other formats (onnx/, original/, …)
        return path.EndsWith(".json", StringComparison.Ordinal) || path.EndsWith(".safetensors", StringComparison.Ordinal)
            || path.EndsWith(".jinja", StringComparison.Ordinal) || path is "tokenizer.model" or "merges.txt" or "vocab.txt";
    }

    /// <summary>Downloads (or finds in the cache) the model's files; returns the snapshot directory to load.</summary>
    public async Task<string> DownloadAsync(HubModelReference model, IProgress<HubDownloadProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        string repoDir = Path.Combine(_settings.CacheDirectory, model.CacheFolderName);
        if (_settings.Offline) return CachedSnapshot(model, repoDir)
            ?? throw new HubDownloadException($"{model} is not in the hub cache {_settings.CacheDirectory} and HF_HUB_OFFLINE is set; download it once with network access (platform model download {model}), or unset HF_HUB_OFFLINE.");

        var (commit, files) = await ListAsync(model, cancellationToken).ConfigureAwait(false);
        var wanted = files.Where(f => IsModelFile(f) && Include(f)).Order(StringComparer.Ordinal).ToList();
        if (!wanted.Contains("config.json"))
            throw new HubDownloadException($"{model} has no config.json at its top level, so it is not a transformers model repository; check the name (files: {string.Join(", ", files.Take(10))}).");

        string snapshot = Path.Combine(repoDir, "snapshots", commit);
        var metas = new List<(string File, FileMeta Meta)>(wanted.Count);
        foreach (var file in wanted) metas.Add((file, await HeadAsync(model, commit, file, cancellationToken).ConfigureAwait(false)));
        long total = metas.Sum(m => m.Meta.Size);
        long done = 0;
        Directory.CreateDirectory(Path.Combine(repoDir, "blobs"));
        Directory.CreateDirectory(snapshot);
        foreach (var (file, meta) in metas)
        {
            string blob = Path.Combine(repoDir, "blobs", meta.Etag);
            // One writer per blob across processes sharing the cache (pods on one cache volume): the others wait, then find it.
            await FetchLockedAsync(model, file, meta, blob, snapshot, done, total, progress, cancellationToken).ConfigureAwait(false);
            done += meta.Size;
            progress?.Report(new HubDownloadProgress(file, meta.Size, meta.Size, done, total));
        }
        Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
        if (model.Revision != commit) await File.WriteAllTextAsync(Path.Combine(repoDir, "refs", model.Revision), commit, cancellationToken).ConfigureAwait(false);
        return snapshot;
    }

    /// <summary>Under the blob's lock: fetches it unless another process already did, and links it into the snapshot.</summary>
    private async Task FetchLockedAsync(HubModelReference model, string file, FileMeta meta, string blob, string snapshot, long before, long total,
        IProgress<HubDownloadProgress>? progress, CancellationToken cancellationToken)
    {
        using var blobLock = await LockAsync(Path.Combine(_settings.CacheDirectory, ".locks", model.CacheFolderName, meta.Etag + ".lock"), cancellationToken).ConfigureAwait(false);
        if (!File.Exists(blob))
            await FetchAsync(meta, blob, new Progress<long>(b => progress?.Report(new HubDownloadProgress(file, b, meta.Size, before + b, total))), cancellationToken).ConfigureAwait(false);
        Link(Path.Combine(snapshot, file), Path.Combine("..", "..", "blobs", meta.Etag));
    }

    /// <summary>The snapshot the cache has for the model's revision, if it holds a config.json; else null.</summary>
    public static string? CachedSnapshot(HubModelReference model, string repoDir)
    {
        ArgumentNullException.ThrowIfNull(model);
        string refFile = Path.Combine(repoDir, "refs", model.Revision);
        string commit = File.Exists(refFile) ? File.ReadAllText(refFile).Trim() : model.Revision;
        string snapshot = Path.Combine(repoDir, "snapshots", commit);
        return File.Exists(Path.Combine(snapshot, "config.json")) ? snapshot : null;
    }

    private sealed record FileMeta(string Etag, long Size, Uri Location);

    private async Task<(string Commit, List<string> Files)> ListAsync(HubModelReference model, CancellationToken cancellationToken)
    {
        var uri = new Uri(_settings.Endpoint, $"api/models/{model.RepoId}/revision/{Uri.EscapeDataString(model.Revision)}");
        using var response = await SendAsync(HttpMethod.Get, uri, model, null, cancellationToken).ConfigureAwait(false);
        await EnsureSuccess(response, model, "list its files").ConfigureAwait(false);
        using var json = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), cancellationToken: cancellationToken).ConfigureAwait(false);
        var root = json.RootElement;
        if (!root.TryGetProperty("sha", out var sha) || sha.GetString() is not { Length: > 0 } commit || !root.TryGetProperty("siblings", out var siblings))
            throw new HubDownloadException($"the hub at {_settings.Endpoint} answered {uri} without a commit (sha) or file list (siblings); is HF_ENDPOINT a Hugging Face-compatible hub?");
        var files = siblings.EnumerateArray().Select(s => s.GetProperty("rfilename").GetString()!).ToList();
        return (commit, files);
    }

    private async Task<FileMeta> HeadAsync(HubModelReference model, string commit, string file, CancellationToken cancellationToken)
    {
        var uri = new Uri(_settings.Endpoint, $"{model.RepoId}/resolve/{commit}/{Uri.EscapeDataString(file)}");
        for (int hop = 0; hop < 5; hop++)
        {
            using var response = await SendAsync(HttpMethod.Head, uri, model, null, cancellationToken).ConfigureAwait(false);
            string? etag = Header(response, "X-Linked-Etag") ?? response.Headers.ETag?.Tag;
            long? size = long.TryParse(Header(response, "X-Linked-Size"), out long linked) ? linked : response.Content.Headers.ContentLength;
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } location)
            {
                var target = location.IsAbsoluteUri ? location : new Uri(uri, location);
                // The hub answers a large (LFS) file with a redirect to its storage that already carries the metadata;
                // a redirect on the hub itself (a renamed repository) is followed for it.
                if (etag is not null && size is not null) return new FileMeta(Normalize(etag), size.Value, target);
                uri = target;
                continue;
            }
            await EnsureSuccess(response, model, $"read {file}").ConfigureAwait(false);
            if (etag is null || size is null)
                throw new HubDownloadException($"the hub sent no ETag or size for {file} of {model}; is HF_ENDPOINT a Hugging Face-compatible hub?");
            return new FileMeta(Normalize(etag), size.Value, uri);
        }
        throw new HubDownloadException($"too many redirects resolving {file} of {model}.");
    }

    /// <summary>GETs the blob into BLOB.incomplete (resuming what is there), checks it and moves it into place.</summary>
    private async Task FetchAsync(FileMeta meta, string blob, IProgress<long> progress, CancellationToken cancellationToken)
    {
        string partial = blob + ".incomplete";
        long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (have > meta.Size) { File.Delete(partial); have = 0; }
        var uri = meta.Location;
        for (int hop = 0; ; hop++)
        {
            using var response = await SendAsync(HttpMethod.Get, uri, null, have > 0 && have < meta.Size ? have : null, cancellationToken).ConfigureAwait(false);
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } location && hop < 5)
            {
                uri = location.IsAbsoluteUri ? location : new Uri(uri, location);
                continue;
            }
            if (!response.IsSuccessStatusCode)
                throw new HubDownloadException($"downloading {Path.GetFileName(blob)} from {uri.GetLeftPart(UriPartial.Path)} failed: {(int)response.StatusCode} {response.ReasonPhrase}; run the download again to resume.");
            bool resumed = response.StatusCode == HttpStatusCode.PartialContent;
            if (!resumed) have = 0;
            var file = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, BufferBytes, useAsync: true);
            await using (file.ConfigureAwait(false))
            {
                var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
                await using var bodyScope = body.ConfigureAwait(false);
                var buffer = new byte[BufferBytes];
                int read;
                try
                {
                    while ((read = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                    {
                        await file.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                        have += read;
                        progress.Report(have);
                    }
                }
                catch (Exception e) when (e is IOException or HttpRequestException)
                {
                    throw new HubDownloadException($"the transfer of {uri.GetLeftPart(UriPartial.Path)} broke at {have} of {meta.Size} bytes ({e.Message}); run the download again to resume from there.", e);
                }
            }
            break;
        }
        if (have != meta.Size)
            throw new HubDownloadException($"the download of {meta.Location.GetLeftPart(UriPartial.Path)} ended at {have} of {meta.Size} bytes; run it again to resume.");
        string actual = await HashAsync(partial, meta.Etag, cancellationToken).ConfigureAwait(false);
        if (!string.Equals(actual, meta.Etag, StringComparison.OrdinalIgnoreCase))
        {
            File.Delete(partial);
            throw new HubDownloadException($"the file downloaded from {meta.Location.GetLeftPart(UriPartial.Path)} is corrupt: its hash is {actual}, the hub said {meta.Etag}. It was deleted; run the download again.");
        }
        File.Move(partial, blob, overwrite: true);
    }

    /// <summary>sha256 for a 64-hex ETag (LFS), else the git blob sha1 ("blob SIZE\0" + bytes).</summary>
    private static async Task<string> HashAsync(string path, string etag, CancellationToken cancellationToken)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, BufferBytes, useAsync: true);
        await using var scope = stream.ConfigureAwait(false);
        if (etag.Length == 64) return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false));
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        sha1.AppendData(System.Text.Encoding.ASCII.GetBytes($"blob {stream.Length}\0"));
        var buffer = new byte[BufferBytes];
        int read;
        while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0) sha1.AppendData(buffer, 0, read);
        return Convert.ToHexStringLower(sha1.GetHashAndReset());
    }

    /// <summary>Sends a request; the token goes only to the hub's own host (never to the storage a redirect names).</summary>
    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri uri, HubModelReference? model, long? rangeFrom, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, uri);
        if (_settings.Token is { } token && uri.Host == _settings.Endpoint.Host && uri.Port == _settings.Endpoint.Port)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        if (rangeFrom is { } from) request.Headers.Range = new RangeHeaderValue(from, null);
        request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
        try
        {
            return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new HubDownloadException($"cannot reach {uri.GetLeftPart(UriPartial.Authority)}{(model is null ? "" : $" for {model}")} ({e.Message}); check the network, or set HF_ENDPOINT to a mirror, or HF_HUB_OFFLINE=1 to use the cache.", e);
        }
    }

    private async Task EnsureSuccess(HttpResponseMessage response, HubModelReference model, string what)
    {
        if (response.IsSuccessStatusCode) return;
        string detail = response.Headers.TryGetValues("X-Error-Message", out var m) ? m.First() : "";
        string fix = response.StatusCode switch
        {
            HttpStatusCode.Unauthorized => _settings.Token is null
                ? "the repository is private or gated: set HF_TOKEN to an access token that can read it"
                : "HF_TOKEN was refused: check that the token is valid and can read this repository",
            HttpStatusCode.Forbidden => "access is denied: for a gated model, accept its license on the hub's model page with the account HF_TOKEN belongs to",
            HttpStatusCode.NotFound => $"no such model or revision '{model.Revision}' on {_settings.Endpoint}: check the name (ORG/NAME) and the revision",
            _ => "the hub failed; try again later",
        };
        throw new HubDownloadException($"cannot {what} of {model}: {(int)response.StatusCode} {response.ReasonPhrase}{(detail.Length > 0 ? $" ({detail})" : "")}; {fix}.");
    }

    private static bool IsRedirect(HttpStatusCode code) => (int)code is 301 or 302 or 303 or 307 or 308;

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    /// <summary>ETags come quoted and sometimes weak (W/"…"); the cache names blobs by the bare value.</summary>
    private static string Normalize(string etag)
    {
        string e = etag.StartsWith("W/", StringComparison.Ordinal) ? etag[2..] : etag;
        return e.Trim('"');
    }

    /// <summary>An exclusive lock file (flock on Linux through FileShare.None), where huggingface_hub keeps its own (.locks/REPO/ETAG.lock); polled until free.</summary>
    private static async Task<FileStream> LockAsync(string path, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Points snapshots/COMMIT/FILE at the blob (a relative symlink, as huggingface_hub makes).</summary>
    private static void Link(string path, string target)
    {
        if (File.Exists(path) || Directory.Exists(path)) File.Delete(path);
        File.CreateSymbolicLink(path, target);
    }
}
