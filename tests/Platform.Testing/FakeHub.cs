// A Hugging Face-style hub on loopback, for download tests that must never touch
// the real hub. It serves one model repository from a local directory with the
// hub's URL scheme and headers: the revision API (commit and file list),
// resolve/ with ETags and X-Repo-Commit, and large files (*.safetensors, as LFS)
// redirected to a separate "storage" host (127.0.0.2) that honours Range
// requests and refuses an Authorization header (a client must not forward the
// hub token there). Switches make it private (token required), cut a transfer
// midway, or corrupt one transfer; counters tell what the client did.
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Platform.Testing;

public sealed class FakeHub : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Dictionary<string, byte[]> _files;
    private readonly ConcurrentDictionary<string, int> _counts = new(StringComparer.Ordinal);
    private int _storagePort;

    private FakeHub(WebApplication app, string repoId, string commit, Dictionary<string, byte[]> files)
    {
        _app = app;
        RepoId = repoId;
        Commit = commit;
        _files = files;
    }

    public string RepoId { get; }
    /// <summary>The commit main points at.</summary>
    public string Commit { get; }
    /// <summary>The hub's base URL, for HF_ENDPOINT.</summary>
    public Uri Endpoint { get; private set; } = null!;
    /// <summary>Non-null: every hub request must carry "Authorization: Bearer {Token}" (a private repository).</summary>
    public string? Token { get; set; }
    /// <summary>The next storage transfer of this file stops after this many bytes (the connection is cut).</summary>
    public (string File, int Bytes)? CutNextTransfer { get; set; }
    /// <summary>The next storage transfer of this file has one byte changed.</summary>
    public string? CorruptNextTransfer { get; set; }

    /// <summary>How often a request of this kind was served: "api", "head:FILE", "get:FILE", "storage:FILE", "range:FILE".</summary>
    public int Count(string kind) => _counts.GetValueOrDefault(kind);

    /// <summary>Serves every top-level file of <paramref name="directory"/> as repository <paramref name="repoId"/> at a fixed commit.</summary>
    public static async Task<FakeHub> StartAsync(string directory, string repoId)
    {
        var files = Directory.GetFiles(directory).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes, StringComparer.Ordinal);
        string commit = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(repoId + string.Join(',', files.Keys.Order(StringComparer.Ordinal)))))[..40];
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, 0);
            k.Listen(IPAddress.Parse("127.0.0.2"), 0);
        });
        var app = builder.Build();
        var hub = new FakeHub(app, repoId, commit, files);
        app.Run(hub.HandleAsync);
        await app.StartAsync();
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Select(a => new Uri(a)).ToList();
        hub.Endpoint = new Uri(addresses.First(a => a.Host == "127.0.0.1").GetLeftPart(UriPartial.Authority) + "/");
        hub._storagePort = addresses.First(a => a.Host == "127.0.0.2").Port;
        return hub;
    }

    private static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal);

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Security", "CA5350:Do Not Use Weak Cryptographic Algorithms", Justification = "Git object ids are SHA-1; the hub's ETags for small files are those ids.")]
    private static string GitSha1(byte[] bytes) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {bytes.Length}\0"), .. bytes]));

    private void Counted(string kind) => _counts.AddOrUpdate(kind, 1, (_, n) => n + 1);

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var response = context.Response;
        string path = Uri.UnescapeDataString(request.Path.Value ?? "");
        if (request.Host.Host == "127.0.0.2")
        {
            await StorageAsync(context, path);
            return;
        }
        if (Token is { } token && request.Headers.Authorization.ToString() != "Bearer " + token)
        {
            response.StatusCode = 401;
            response.Headers["X-Error-Message"] = "Invalid credentials in Authorization header";
            return;
        }
        string api = $"/api/models/{RepoId}/revision/";
        if (path.StartsWith(api, StringComparison.Ordinal))
        {
            Counted("api");
            string revision = path[api.Length..];
            if (revision != "main" && revision != Commit)
            {
                response.StatusCode = 404;
                response.Headers["X-Error-Message"] = "Invalid rev id: " + revision;
                return;
            }
            response.ContentType = "application/json";
            var siblings = string.Join(',', _files.Keys.Concat(["onnx/model.onnx", "README.md"]).Select(f => $"{{\"rfilename\":\"{f}\"}}"));
            await response.WriteAsync($"{{\"id\":\"{RepoId}\",\"sha\":\"{Commit}\",\"siblings\":[{siblings}]}}");
            return;
        }
        string resolve = $"/{RepoId}/resolve/";
        if (!path.StartsWith(resolve, StringComparison.Ordinal))
        {
            response.StatusCode = 404;
            response.Headers["X-Error-Message"] = "Repository not found";
            return;
        }
        var rest = path[resolve.Length..].Split('/', 2);
        if (rest.Length != 2 || (rest[0] != "main" && rest[0] != Commit) || !_files.TryGetValue(rest[1], out var bytes))
        {
            response.StatusCode = 404;
            response.Headers["X-Error-Message"] = "Entry not found";
            return;
        }
        string file = rest[1];
        bool head = HttpMethods.IsHead(request.Method);
        Counted((head ? "head:" : "get:") + file);
        response.Headers["X-Repo-Commit"] = Commit;
        if (IsLfs(file))
        {
            // Like the hub: a redirect to storage, with the LFS object's sha256 and size on the redirect itself.
            response.StatusCode = 302;
            response.Headers["X-Linked-Etag"] = $"\"{Sha256(bytes)}\"";
            response.Headers["X-Linked-Size"] = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
            response.Headers.ETag = $"\"{GitSha1(Encoding.UTF8.GetBytes("version https://git-lfs.github.com/spec/v1"))}\"";
            response.Headers.Location = $"http://127.0.0.2:{_storagePort}/storage/{Sha256(bytes)}/{file}";
            return;
        }
        response.Headers.ETag = $"\"{GitSha1(bytes)}\"";
        response.ContentLength = bytes.Length;
        if (!head) await response.Body.WriteAsync(bytes);
    }

    private async Task StorageAsync(HttpContext context, string path)
    {
        var response = context.Response;
        var parts = path.Split('/', 4); // "", "storage", sha, file
        if (parts.Length != 4 || !_files.TryGetValue(parts[3], out var bytes) || Sha256(bytes) != parts[2])
        {
            response.StatusCode = 404;
            return;
        }
        if (context.Request.Headers.Authorization.Count > 0)
        {
            // Storage has its own (signed-URL) authentication; a forwarded hub token is a leak.
            response.StatusCode = 400;
            await response.WriteAsync("Authorization header forwarded to storage");
            return;
        }
        string file = parts[3];
        Counted("storage:" + file);
        long from = 0;
        if (context.Request.GetTypedHeaders().Range is { Ranges.Count: 1 } range && range.Ranges.First().From is { } start && start < bytes.Length)
        {
            Counted("range:" + file);
            from = start;
            response.StatusCode = 206;
            response.Headers.ContentRange = $"bytes {from}-{bytes.Length - 1}/{bytes.Length}";
        }
        var body = bytes.AsMemory((int)from);
        response.ContentLength = body.Length;
        if (CorruptNextTransfer == file)
        {
            CorruptNextTransfer = null;
            var copy = body.ToArray();
            copy[copy.Length / 2] ^= 0x5a;
            body = copy;
        }
        if (CutNextTransfer is { } cut && cut.File == file)
        {
            CutNextTransfer = null;
            await response.StartAsync();
            await response.Body.WriteAsync(body[..Math.Min(cut.Bytes, body.Length)]);
            await response.Body.FlushAsync();
            await Task.Delay(200); // let the bytes reach the client before the connection is cut
            context.Abort();
            return;
        }
        await response.Body.WriteAsync(body);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
