// An in-process fake Kubernetes API server on Kestrel (127.0.0.1, port 0) that speaks the real
// REST and watch protocol, so the real KubernetesClient and the real kubectl work against it:
// discovery (/api, /apis, resource lists with short names), CRUD on any registered type
// (CRDs register themselves on create), list and watch with label and field selectors,
// resourceVersion, bookmarks and 410 Expired, the status and scale subresources, JSON merge
// patch (strategic merge patch is treated as merge patch: enough for the objects kubectl
// patches here), server-side Table output with a CRD's printer columns, finalizers and
// garbage collection. Server-side apply is not implemented (415), and there are no built-in
// controllers: tests play the kubelet by writing workload status (MarkReady helpers), or run
// the test kubelet (Kubelet/TestKubelet.cs), which runs the pods as local processes.
// With TLS on (StartAsync(tls: true)) it serves HTTPS with its own self-signed CA, so pods can
// use the in-cluster configuration (KUBERNETES_SERVICE_HOST and a mounted ca.crt) as in a cluster.
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Platform.Testing.Kubernetes;

public sealed class FakeApiServer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };
    private readonly WebApplication _app;
    private readonly ResourceTypes _types = new();
    private readonly ObjectStore _store;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<(int Count, TaskCompletionSource Reached)> _watchWaiters = [];
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _listLog = new();
    private int _watchRequests;

    private FakeApiServer(TimeProvider time, X509Certificate2? certificate)
    {
        _time = time;
        _store = new ObjectStore(_types, time);
        Certificate = certificate;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen =>
        {
            if (certificate is not null) listen.UseHttps(certificate);
        }));
        _app = builder.Build();
        _app.Run(HandleAsync);
    }

    public string Url { get; private set; } = "";

    /// <summary>The server's certificate (its own CA) when it serves HTTPS; null for plain HTTP.</summary>
    public X509Certificate2? Certificate { get; }

    /// <summary>The CA certificate in PEM, as a pod's ca.crt or a kubeconfig's certificate-authority-data holds it.</summary>
    public string? CaPem => Certificate?.ExportCertificatePem();

    /// <summary>The port the server listens on (127.0.0.1).</summary>
    public int Port => new Uri(Url).Port;

    internal ObjectStore Store => _store;

    internal ResourceTypes Types => _types;

    /// <summary>How often an open watch with allowWatchBookmarks gets a BOOKMARK.</summary>
    public TimeSpan BookmarkInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Lists of whole collections (no field selector): what informers do. The tests'
    /// waiters always select one object by name, so they do not count here.</summary>
    public int ListRequests => _listLog.Count;

    /// <summary>The collection lists counted by <see cref="ListRequests"/>, in order (path and query), for failure messages.</summary>
    public IReadOnlyList<string> ListLog => [.. _listLog];

    /// <summary>Watches of whole collections (no field selector), as <see cref="ListRequests"/> counts lists:
    /// informers' watches, not the tests' waiters or the leader election's watch of its one Lease.</summary>
    public int WatchRequests => Volatile.Read(ref _watchRequests);

    public int OpenWatches => _store.OpenWatches;

    /// <summary>Completes once the server has received this many collection watches (as <see cref="WatchRequests"/> counts them).</summary>
    public Task WatchRequestsReached(int count)
    {
        lock (_watchWaiters)
        {
            if (WatchRequests >= count)
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _watchWaiters.Add((count, reached));
            return reached.Task;
        }
    }

    /// <summary>
    /// Writes a kubeconfig for this server (token auth, the given user and default namespace) to a fresh
    /// temporary file named after <paramref name="prefix"/>, for clients and for the real kubectl.
    /// </summary>
    public async Task<string> WriteKubeconfigAsync(string prefix, string user, string defaultNamespace)
    {
        var path = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..8] + ".kubeconfig");
        await File.WriteAllTextAsync(path, $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: fake
              cluster:
                server: {Url}{(CaPem is { } ca ? "\n    certificate-authority-data: " + Convert.ToBase64String(Encoding.ASCII.GetBytes(ca)) : "")}
            users:
            - name: {user}
              user:
                token: fake-token
            contexts:
            - name: fake
              context:
                cluster: fake
                user: {user}
                namespace: {defaultNamespace}
            current-context: fake
            """).ConfigureAwait(false);
        return path;
    }

    public static async Task<FakeApiServer> StartAsync(TimeProvider? time = null, bool tls = false)
    {
        var server = new FakeApiServer(time ?? TimeProvider.System, tls ? SelfSignedCa() : null);
        await server._app.StartAsync().ConfigureAwait(false);
        var addresses = server._app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        server.Url = addresses.First().Replace("//[::1]", "//127.0.0.1", StringComparison.Ordinal);
        return server;
    }

    /// <summary>A self-signed CA certificate for 127.0.0.1 and localhost, valid for a day.</summary>
    private static X509Certificate2 SelfSignedCa()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=fake-kube-apiserver", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyCertSign, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        san.AddDnsName("kubernetes.default.svc");
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        // Kestrel needs the key in a form it can use on every platform: round-trip through PKCS#12.
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
    }

    public void InjectConflicts(string group, string plural, int count) => _store.InjectConflicts(group + "/" + plural, count);

    public int PendingConflicts(string group, string plural) => _store.PendingConflicts(group + "/" + plural);

    public void CompactHistory() => _store.CompactHistory();

    /// <summary>Compacts the history and ends every watch atomically: every watcher gets 410 and relists.</summary>
    public void ExpireWatches() => _store.ExpireWatches();

    public void DropWatches() => _store.DropWatches();

    public void BreakWatches() => _store.BreakWatches();

    public void StallWatches() => _store.StallWatches();

    public JsonObject? Get(string group, string plural, string ns, string name) =>
        _types.FindByKey(group + "/" + plural) is { } type ? _store.Get(type, ns, name) : null;

    /// <summary>Writes an object's status as a controller (kubelet, StatefulSet controller) would.</summary>
    public void SetStatus(string group, string plural, string ns, string name, JsonObject status)
    {
        var type = _types.FindByKey(group + "/" + plural) ?? throw new InvalidOperationException($"unknown type {group}/{plural}");
        var current = _store.Get(type, ns, name) ?? throw new InvalidOperationException($"{plural} {ns}/{name} does not exist");
        current["status"] = status;
        current["metadata"]!.AsObject().Remove("resourceVersion");
        _store.Update(type, ns, name, current, statusOnly: true);
    }

    /// <summary>A list or watch of a whole collection (no field selector): what informers do, not the tests'
    /// waiters or the leader election, which select one object by name. Both ListRequests and WatchRequests count these.</summary>
    private static bool IsWholeCollection(HttpContext ctx) => string.IsNullOrEmpty(ctx.Request.Query["fieldSelector"]);

    private void CountCollectionWatch()
    {
        var total = Interlocked.Increment(ref _watchRequests);
        lock (_watchWaiters)
        {
            foreach (var waiter in _watchWaiters.Where(w => w.Count <= total).ToList())
            {
                waiter.Reached.TrySetResult();
                _watchWaiters.Remove(waiter);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _store.DropWatches();
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task HandleAsync(HttpContext ctx)
    {
        try
        {
            await RouteAsync(ctx).ConfigureAwait(false);
        }
        catch (ApiException ex)
        {
            await WriteJsonAsync(ctx, ex.Code, ex.ToStatus()).ConfigureAwait(false);
        }
        catch (JsonException ex)
        {
            await WriteJsonAsync(ctx, 400, new ApiException(400, "BadRequest", "invalid JSON body: " + ex.Message).ToStatus()).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or NullReferenceException or KeyNotFoundException && !ctx.Response.HasStarted)
        {
            // A bug in the fake, not an API answer: make it visible in the failing test's output.
            await WriteJsonAsync(ctx, 500, new ApiException(500, "InternalError", ex.ToString()).ToStatus()).ConfigureAwait(false);
        }
    }

    private async Task RouteAsync(HttpContext ctx)
    {
        var segments = ctx.Request.Path.Value!.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (segments.Length == 0)
        {
            throw new ApiException(404, "NotFound", "the server could not find the requested resource");
        }

        switch (segments)
        {
            case ["api"]:
                await WriteJsonAsync(ctx, 200, ResourceTypes.ApiVersions(ctx.Request.Host.Value!)).ConfigureAwait(false);
                return;
            case ["apis"]:
                await WriteJsonAsync(ctx, 200, _types.GroupList()).ConfigureAwait(false);
                return;
            case ["version"]:
                await WriteJsonAsync(ctx, 200, new JsonObject { ["major"] = "1", ["minor"] = "32", ["gitVersion"] = "v1.32.0-fake", ["platform"] = "linux/amd64" }).ConfigureAwait(false);
                return;
            case ["apis", var groupName]:
                await WriteJsonAsync(ctx, 200, _types.Group(groupName) ?? throw new ApiException(404, "NotFound", $"group {groupName} not found")).ConfigureAwait(false);
                return;
            default:
                break;
        }

        string group, version;
        string[] rest;
        if (segments[0] == "api" && segments.Length >= 2)
        {
            (group, version, rest) = ("", segments[1], segments[2..]);
        }
        else if (segments[0] == "apis" && segments.Length >= 3)
        {
            (group, version, rest) = (segments[1], segments[2], segments[3..]);
        }
        else
        {
            throw new ApiException(404, "NotFound", "the server could not find the requested resource");
        }

        if (rest.Length == 0)
        {
            await WriteJsonAsync(ctx, 200, _types.ResourceList(group, version) ?? throw new ApiException(404, "NotFound", $"{group}/{version} not found")).ConfigureAwait(false);
            return;
        }

        string? ns = null;
        if (rest.Length >= 3 && rest[0] == "namespaces" && _types.Find(group, version, rest[2]) is { Namespaced: true })
        {
            ns = rest[1];
            rest = rest[2..];
        }

        var type = _types.Find(group, version, rest[0]) ?? throw new ApiException(404, "NotFound", $"the server could not find the requested resource ({rest[0]})");
        var name = rest.Length > 1 ? rest[1] : null;
        var sub = rest.Length > 2 ? rest[2] : null;
        var storeNs = type.Namespaced ? ns ?? "" : "";
        if (sub is not (null or "status" or "scale") || (sub == "status" && !type.HasStatus) || (sub == "scale" && type.Scale is null))
        {
            throw new ApiException(404, "NotFound", $"subresource {sub} not found");
        }

        var method = ctx.Request.Method;
        if (name is null)
        {
            switch (method)
            {
                case "GET" when IsTrue(ctx.Request.Query["watch"]):
                    await WatchAsync(ctx, type, type.Namespaced ? ns : null).ConfigureAwait(false);
                    return;
                case "GET":
                    await ListAsync(ctx, type, type.Namespaced ? ns : null).ConfigureAwait(false);
                    return;
                case "POST":
                    if (type.Namespaced && ns is null)
                    {
                        throw new ApiException(404, "NotFound", "create needs a namespace in the path");
                    }

                    var created = _store.Create(type, storeNs, await ReadBodyAsync(ctx).ConfigureAwait(false));
                    await WriteJsonAsync(ctx, 201, created).ConfigureAwait(false);
                    return;
                default:
                    throw new ApiException(405, "MethodNotAllowed", $"{method} is not supported on a collection here");
            }
        }

        switch (method)
        {
            case "GET":
                var obj = _store.Get(type, storeNs, name) ?? throw new ApiException(404, "NotFound", $"{type.Plural}{(type.Group.Length > 0 ? "." + type.Group : "")} \"{name}\" not found");
                if (sub == "scale")
                {
                    await WriteJsonAsync(ctx, 200, ToScale(type, obj)).ConfigureAwait(false);
                }
                else if (WantsTable(ctx))
                {
                    await WriteJsonAsync(ctx, 200, Table(type, [obj], _store.CurrentResourceVersion)).ConfigureAwait(false);
                }
                else
                {
                    await WriteJsonAsync(ctx, 200, obj).ConfigureAwait(false);
                }

                return;
            case "PUT":
                var body = await ReadBodyAsync(ctx).ConfigureAwait(false);
                await WriteJsonAsync(ctx, 200, sub == "scale" ? UpdateScale(type, storeNs, name, body) : _store.Update(type, storeNs, name, body, sub == "status")).ConfigureAwait(false);
                return;
            case "PATCH":
                await WriteJsonAsync(ctx, 200, await PatchAsync(ctx, type, storeNs, name, sub).ConfigureAwait(false)).ConfigureAwait(false);
                return;
            case "DELETE":
                var options = await ReadOptionalBodyAsync(ctx).ConfigureAwait(false);
                var orphan = JsonTools.Str(options, "propagationPolicy") == "Orphan" || ctx.Request.Query["propagationPolicy"] == "Orphan";
                await WriteJsonAsync(ctx, 200, _store.Delete(type, storeNs, name, orphan)).ConfigureAwait(false);
                return;
            default:
                throw new ApiException(405, "MethodNotAllowed", $"{method} is not supported");
        }
    }

    private async Task<JsonObject> PatchAsync(HttpContext ctx, ResourceType type, string ns, string name, string? sub)
    {
        var contentType = ctx.Request.ContentType ?? "";
        if (!contentType.StartsWith("application/merge-patch+json", StringComparison.Ordinal) && !contentType.StartsWith("application/strategic-merge-patch+json", StringComparison.Ordinal))
        {
            throw new ApiException(415, "UnsupportedMediaType", $"the fake API server supports merge patches only, not {contentType}");
        }

        var patch = await ReadBodyAsync(ctx).ConfigureAwait(false);
        var current = _store.Get(type, ns, name) ?? throw new ApiException(404, "NotFound", $"{type.Plural} \"{name}\" not found");
        if (sub == "scale")
        {
            var scale = JsonTools.MergePatch(ToScale(type, current), patch)!.AsObject();
            if (JsonTools.Str(patch, "metadata.resourceVersion") is null)
            {
                scale["metadata"]!.AsObject().Remove("resourceVersion");
            }

            return UpdateScale(type, ns, name, scale);
        }

        var merged = JsonTools.MergePatch(current, patch)!.AsObject();
        if (JsonTools.Str(patch, "metadata.resourceVersion") is null)
        {
            // Without a resourceVersion in the patch there is no precondition.
            merged["metadata"]!.AsObject().Remove("resourceVersion");
        }

        return _store.Update(type, ns, name, merged, sub == "status");
    }

    private JsonObject UpdateScale(ResourceType type, string ns, string name, JsonObject scale)
    {
        var current = _store.Get(type, ns, name) ?? throw new ApiException(404, "NotFound", $"{type.Plural} \"{name}\" not found");
        var replicas = JsonTools.Get(scale, "spec.replicas") is { } r ? (int)JsonTools.Long(r) : throw new ApiException(422, "Invalid", "spec.replicas is required");
        if (replicas < 0)
        {
            throw new ApiException(422, "Invalid", "spec.replicas must be >= 0");
        }

        JsonTools.Set(current, type.Scale!.SpecReplicasPath, replicas);
        var precondition = JsonTools.Str(scale, "metadata.resourceVersion");
        if (string.IsNullOrEmpty(precondition))
        {
            current["metadata"]!.AsObject().Remove("resourceVersion");
        }
        else
        {
            current["metadata"]!["resourceVersion"] = precondition;
        }

        return ToScale(type, _store.Update(type, ns, name, current, statusOnly: false));
    }

    private static JsonObject ToScale(ResourceType type, JsonObject obj) => new()
    {
        ["kind"] = "Scale",
        ["apiVersion"] = "autoscaling/v1",
        ["metadata"] = new JsonObject
        {
            ["name"] = obj["metadata"]!["name"]!.DeepClone(),
            ["namespace"] = obj["metadata"]!["namespace"]?.DeepClone(),
            ["uid"] = obj["metadata"]!["uid"]!.DeepClone(),
            ["resourceVersion"] = obj["metadata"]!["resourceVersion"]!.DeepClone(),
            ["creationTimestamp"] = obj["metadata"]!["creationTimestamp"]!.DeepClone(),
        },
        ["spec"] = new JsonObject { ["replicas"] = JsonTools.Get(obj, type.Scale!.SpecReplicasPath)?.DeepClone() ?? 0 },
        ["status"] = new JsonObject
        {
            ["replicas"] = JsonTools.Get(obj, type.Scale.StatusReplicasPath)?.DeepClone() ?? 0,
            ["selector"] = type.Scale.LabelSelectorPath is { } path ? JsonTools.Get(obj, path)?.DeepClone() : null,
        },
    };

    private async Task ListAsync(HttpContext ctx, ResourceType type, string? ns)
    {
        if (IsWholeCollection(ctx))
        {
            _listLog.Enqueue(ctx.Request.Path + ctx.Request.QueryString);
        }

        var filter = Filter(ctx);
        var (items, rv) = _store.List(type, ns, filter);
        if (WantsTable(ctx))
        {
            await WriteJsonAsync(ctx, 200, Table(type, items, rv)).ConfigureAwait(false);
            return;
        }

        var array = new JsonArray();
        foreach (var item in items)
        {
            array.Add(item);
        }

        await WriteJsonAsync(ctx, 200, new JsonObject
        {
            ["kind"] = type.Kind + "List",
            ["apiVersion"] = type.GroupVersion,
            ["metadata"] = new JsonObject { ["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            ["items"] = array,
        }).ConfigureAwait(false);
    }

    private async Task WatchAsync(HttpContext ctx, ResourceType type, string? ns)
    {
        if (IsWholeCollection(ctx))
        {
            CountCollectionWatch();
        }

        var query = ctx.Request.Query;
        var bookmarks = IsTrue(query["allowWatchBookmarks"]);
        var timeout = int.TryParse(query["timeoutSeconds"], out var seconds) && seconds > 0 ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromMinutes(30);
        WatchSubscription sub;
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        try
        {
            sub = _store.Subscribe(type, ns, Filter(ctx), query["resourceVersion"]);
        }
        catch (ApiException ex) when (ex.Code == 410)
        {
            // As the real server does: 200, then one ERROR event carrying the 410 Status, then close.
            await WriteLineAsync(ctx, new JsonObject { ["type"] = "ERROR", ["object"] = ex.ToStatus() }).ConfigureAwait(false);
            return;
        }

        try
        {
            await ctx.Response.StartAsync(ctx.RequestAborted).ConfigureAwait(false);
            using var done = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, _stopping.Token);
            done.CancelAfter(timeout);
            var reader = sub.Channel.Reader;
            while (!done.IsCancellationRequested)
            {
                var wait = reader.WaitToReadAsync(done.Token).AsTask();
                var tick = Task.Delay(BookmarkInterval, _time, done.Token);
                var first = await Task.WhenAny(wait, tick).ConfigureAwait(false);
                if (first == wait)
                {
                    if (!await wait.ConfigureAwait(false))
                    {
                        if (sub.Broken)
                        {
                            ctx.Abort();
                        }

                        return;
                    }

                    while (!sub.Stalled && reader.TryRead(out var e))
                    {
                        await WriteLineAsync(ctx, new JsonObject { ["type"] = e.Type, ["object"] = e.Object.DeepClone() }).ConfigureAwait(false);
                    }

                    if (sub.Stalled)
                    {
                        await Task.Delay(Timeout.Infinite, done.Token).ConfigureAwait(false);
                    }
                }
                else if (bookmarks && !sub.Stalled && _store.BookmarkVersion(sub) is { } rv)
                {
                    await WriteLineAsync(ctx, new JsonObject
                    {
                        ["type"] = "BOOKMARK",
                        ["object"] = new JsonObject
                        {
                            ["kind"] = type.Kind,
                            ["apiVersion"] = type.GroupVersion,
                            ["metadata"] = new JsonObject { ["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture) },
                        },
                    }).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            // Client went away (possibly mid-write), the timeout passed or the server is
            // stopping: end the stream (the finally unsubscribes).
            return;
        }
        finally
        {
            _store.Unsubscribe(sub);
        }
    }

    private static Func<JsonObject, bool> Filter(HttpContext ctx)
    {
        var labels = JsonTools.ParseLabelSelector(ctx.Request.Query["labelSelector"]);
        var fields = JsonTools.ParseFieldSelector(ctx.Request.Query["fieldSelector"]);
        return o => labels(o) && fields(o);
    }

    private static bool WantsTable(HttpContext ctx) => ctx.Request.Headers.Accept.ToString().Contains("as=Table", StringComparison.Ordinal);

    private JsonObject Table(ResourceType type, List<JsonObject> items, long rv)
    {
        var columns = new List<PrinterColumn> { new("Name", "string", ".metadata.name", "Name must be unique within a namespace.", 0, "name") };
        columns.AddRange(type.Columns.Count > 0 ? type.Columns : [new PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age of the object", 0, null)]);
        var definitions = new JsonArray();
        foreach (var c in columns)
        {
            definitions.Add(new JsonObject { ["name"] = c.Name, ["type"] = c.Type == "date" ? "date" : c.Type, ["format"] = c.Format ?? "", ["description"] = c.Description, ["priority"] = c.Priority });
        }

        var rows = new JsonArray();
        foreach (var item in items)
        {
            var cells = new JsonArray();
            foreach (var c in columns)
            {
                var value = JsonTools.Get(item, c.JsonPath);
                cells.Add(c.Type == "date" ? Age(value) : value?.DeepClone());
            }

            rows.Add(new JsonObject
            {
                ["cells"] = cells,
                ["object"] = new JsonObject { ["kind"] = "PartialObjectMetadata", ["apiVersion"] = "meta.k8s.io/v1", ["metadata"] = item["metadata"]!.DeepClone() },
            });
        }

        return new JsonObject
        {
            ["kind"] = "Table",
            ["apiVersion"] = "meta.k8s.io/v1",
            ["metadata"] = new JsonObject { ["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            ["columnDefinitions"] = definitions,
            ["rows"] = rows,
        };
    }

    private string Age(JsonNode? timestamp)
    {
        if (timestamp is null || !DateTimeOffset.TryParse(timestamp.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var at))
        {
            return "<unknown>";
        }

        var age = _time.GetUtcNow() - at;
        return age.TotalDays >= 1 ? $"{(int)age.TotalDays}d" : age.TotalHours >= 1 ? $"{(int)age.TotalHours}h" : age.TotalMinutes >= 1 ? $"{(int)age.TotalMinutes}m" : $"{Math.Max(0, (int)age.TotalSeconds)}s";
    }

    private static bool IsTrue(string? value) => value is "true" or "1" or "True";

    private static async Task<JsonObject> ReadBodyAsync(HttpContext ctx)
    {
        using var reader = new StreamReader(ctx.Request.Body, Encoding.UTF8);
        var text = await reader.ReadToEndAsync(ctx.RequestAborted).ConfigureAwait(false);
        return JsonNode.Parse(text) as JsonObject ?? throw new ApiException(400, "BadRequest", "the body must be a JSON object");
    }

    /// <summary>DELETE may carry DeleteOptions, an empty body, or "null".</summary>
    private static async Task<JsonObject?> ReadOptionalBodyAsync(HttpContext ctx)
    {
        using var reader = new StreamReader(ctx.Request.Body, Encoding.UTF8);
        var text = await reader.ReadToEndAsync(ctx.RequestAborted).ConfigureAwait(false);
        return string.IsNullOrWhiteSpace(text) ? null : JsonNode.Parse(text) as JsonObject;
    }

    private static async Task WriteJsonAsync(HttpContext ctx, int status, JsonObject body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(Compact), ctx.RequestAborted).ConfigureAwait(false);
    }

    private static async Task WriteLineAsync(HttpContext ctx, JsonObject line)
    {
        await ctx.Response.WriteAsync(line.ToJsonString(Compact) + "\n", ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }
}
