// List-then-watch for one resource kind, client-go style: list, remember the list's
// resourceVersion, watch from it (with bookmarks so the version stays fresh), resume from the
// last seen version when a watch ends or breaks, relist only when the server answers 410 Gone/Expired, and a
// watchdog that restarts a watch that has gone silent (no event and no bookmark) for too long.
// Every change is handed to a callback; a relist re-announces every object (a resync).
using System.Collections.Concurrent;
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Platform.Operator.Runtime;

/// <summary>Arguments of one list or watch call.</summary>
public sealed record ListRequest(string? ResourceVersion, bool Watch, int? TimeoutSeconds);

/// <summary>The "namespace/name" key of an object, as the work queue uses it.</summary>
public static class ObjectKey
{
    public static string Of(IKubernetesObject<V1ObjectMeta> obj) => obj.Metadata.NamespaceProperty + "/" + obj.Metadata.Name;
}

public sealed record InformerTimings(TimeSpan WatchTimeout, TimeSpan WatchdogTimeout, TimeSpan ErrorBackoff);

public sealed partial class Informer<T, TList>
    where T : class, IKubernetesObject<V1ObjectMeta>
    where TList : IItems<T>, IMetadata<V1ListMeta>
{
    private readonly string _name;
    private readonly Func<ListRequest, CancellationToken, Task<HttpOperationResponse<TList>>> _list;
    private readonly Action<WatchEventType, T> _onChange;
    private readonly InformerTimings _timings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, T> _cache = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _relists;

    public Informer(
        string name,
        Func<ListRequest, CancellationToken, Task<HttpOperationResponse<TList>>> list,
        Action<WatchEventType, T> onChange,
        InformerTimings timings,
        TimeProvider time,
        ILogger logger)
    {
        _name = name;
        _list = list;
        _onChange = onChange;
        _timings = timings;
        _time = time;
        _logger = logger;
    }

    /// <summary>Completes after the first successful list.</summary>
    public Task Synced => _synced.Task;

    /// <summary>How many times the informer listed (1 + relists).</summary>
    public int Lists => Volatile.Read(ref _relists);

    public bool TryGet(string key, out T? value) => _cache.TryGetValue(key, out value);

    public IReadOnlyCollection<T> Items => [.. _cache.Values];

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                var resourceVersion = await ListAsync(cancellationToken).ConfigureAwait(false);
                while (resourceVersion is not null)
                {
                    resourceVersion = await WatchAsync(resourceVersion, cancellationToken).ConfigureAwait(false);
                }

                LogRelist(_logger, _name);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException or KubernetesException)
            {
                LogListWatchError(_logger, _name, ex);
                try
                {
                    await Task.Delay(_timings.ErrorBackoff, _time, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task<string> ListAsync(CancellationToken cancellationToken)
    {
        using var response = await _list(new ListRequest(null, false, null), cancellationToken).ConfigureAwait(false);
        var list = response.Body;
        Interlocked.Increment(ref _relists);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in list.Items)
        {
            var key = ObjectKey.Of(item);
            seen.Add(key);
            var existed = _cache.ContainsKey(key);
            _cache[key] = item;
            _onChange(existed ? WatchEventType.Modified : WatchEventType.Added, item);
        }

        foreach (var (key, gone) in _cache.ToArray())
        {
            if (!seen.Contains(key) && _cache.TryRemove(key, out _))
            {
                _onChange(WatchEventType.Deleted, gone);
            }
        }

        _synced.TrySetResult();
        return list.Metadata.ResourceVersion;
    }

    /// <summary>One watch call; returns the version to resume from, or null to relist.</summary>
    private async Task<string?> WatchAsync(string resourceVersion, CancellationToken cancellationToken)
    {
        using var watchCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var watchdog = _time.CreateTimer(static state => ((CancellationTokenSource)state!).Cancel(), watchCts, _timings.WatchdogTimeout, Timeout.InfiniteTimeSpan);
        Exception? streamError = null;
        var timeoutSeconds = Math.Max(1, (int)_timings.WatchTimeout.TotalSeconds);
        try
        {
            var responseTask = _list(new ListRequest(resourceVersion, true, timeoutSeconds), watchCts.Token);
            // The typed extension is the one way to watch any list type, custom resources included;
            // the per-operation replacements return untyped objects for custom resources.
#pragma warning disable CS0618
            var events = responseTask.WatchAsync<T, TList>(ex => streamError = ex, watchCts.Token);
#pragma warning restore CS0618
            await foreach (var (type, item) in events.ConfigureAwait(false))
            {
                watchdog.Change(_timings.WatchdogTimeout, Timeout.InfiniteTimeSpan);
                if (item?.Metadata?.ResourceVersion is { Length: > 0 } version)
                {
                    resourceVersion = version;
                }

                switch (type)
                {
                    case WatchEventType.Added or WatchEventType.Modified:
                        _cache[ObjectKey.Of(item!)] = item!;
                        _onChange(type, item!);
                        break;
                    case WatchEventType.Deleted:
                        _cache.TryRemove(ObjectKey.Of(item!), out _);
                        _onChange(type, item!);
                        break;
                    case WatchEventType.Bookmark:
                        break;
                    default:
                        break;
                }

                if (IsExpired(streamError))
                {
                    return null;
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            LogWatchdog(_logger, _name, _timings.WatchdogTimeout.TotalSeconds);
            return resourceVersion;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Gone)
        {
            return null;
        }
        catch (HttpRequestException ex) when (ex.InnerException is EndOfStreamException)
        {
            // The client peeks at the first line before handing out the stream, so a watch that
            // the server closes before any event (a timeout, a restart) surfaces as this. It is a
            // normal end: resume from the same version, no relist.
            return resourceVersion;
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException or KubernetesException)
        {
            // A broken connection or a refused watch (a 5xx, an API server restarting) does not
            // make the version stale: resume from it after the back-off. Only the server's 410
            // (above) says the history is gone and a relist is needed; relisting every informer
            // on each network blip would put a full list of every kind on the API server.
            LogWatchError(_logger, _name, ex);
            await Task.Delay(_timings.ErrorBackoff, _time, cancellationToken).ConfigureAwait(false);
            return resourceVersion;
        }

        if (IsExpired(streamError))
        {
            return null;
        }

        if (streamError is not null)
        {
            LogStreamError(_logger, _name, streamError);
        }

        return resourceVersion;
    }

    private static bool IsExpired(Exception? error) =>
        error is KubernetesException { Status.Code: (int)HttpStatusCode.Gone }
        || error is KubernetesException { Status.Reason: "Expired" or "Gone" };

    [LoggerMessage(Level = LogLevel.Information, Message = "Informer {Name}: watch history expired (410), relisting")]
    private static partial void LogRelist(ILogger logger, string name);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Informer {Name}: list/watch failed, retrying")]
    private static partial void LogListWatchError(ILogger logger, string name, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Informer {Name}: watch failed, resuming from the last version")]
    private static partial void LogWatchError(ILogger logger, string name, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Informer {Name}: watch silent for {Seconds}s, restarting it")]
    private static partial void LogWatchdog(ILogger logger, string name, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Informer {Name}: watch stream reported an error, resuming")]
    private static partial void LogStreamError(ILogger logger, string name, Exception exception);
}
