// Kubernetes discovery: keeps WorkerDirectory's address set equal to the
// serving endpoints of the workers' headless Service. It lists the Service's
// EndpointSlices (label kubernetes.io/service-name=NAME), then watches from the
// list's resourceVersion with bookmarks; a watch that ends is resumed from the
// last version seen, a 410 Gone/Expired (history compacted) relists, and a
// failed list or watch is retried after an exponential backoff with jitter
// (ReconnectBaseMs doubling to ReconnectMaxMs; reset once a watch delivers).
// A watch open longer than its server-side timeout plus a minute is presumed
// dead (a silently dropped connection) and restarted.
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Platform.Router.Configuration;
using Platform.Router.Workers;

namespace Platform.Router.Discovery;

public sealed partial class EndpointSliceWatcher : BackgroundService
{
    public const string ServiceNameLabel = "kubernetes.io/service-name";
    private static readonly TimeSpan WatchdogMargin = TimeSpan.FromMinutes(1);

    private readonly IKubernetes _client;
    private readonly WorkerDirectory _workers;
    private readonly TimeProvider _time;
    private readonly ILogger<EndpointSliceWatcher> _logger;
    private readonly string _namespace;
    private readonly string _selector;
    private readonly KubernetesDiscoveryOptions _options;
    private readonly Dictionary<string, V1EndpointSlice> _slices = new(StringComparer.Ordinal);
    private int _lists;
    private int _failures;

    public EndpointSliceWatcher(IKubernetes client, WorkerDirectory workers, string @namespace, KubernetesDiscoveryOptions options,
        TimeProvider time, ILogger<EndpointSliceWatcher> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _client = client;
        _workers = workers;
        _namespace = @namespace;
        _options = options;
        _selector = $"{ServiceNameLabel}={options.WorkerService}";
        _time = time;
        _logger = logger;
    }

    /// <summary>Successful lists so far: 1 + relists (diagnostics and tests).</summary>
    public int Lists => Volatile.Read(ref _lists);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                string? version = await ListAsync(stoppingToken).ConfigureAwait(false);
                while (version is not null)
                    version = await WatchAsync(version, stoppingToken).ConfigureAwait(false);
                LogRelist(_logger, _options.WorkerService!);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HttpOperationException or HttpRequestException or IOException or KubernetesException or OperationCanceledException)
            {
                var delay = NextBackoff();
                LogFailed(_logger, _options.WorkerService!, delay.TotalMilliseconds, e.Message);
                await _time.DelayOrStop(delay, stoppingToken).ConfigureAwait(false);
            }
        }
    }

    private async Task<string> ListAsync(CancellationToken stop)
    {
        var list = await _client.DiscoveryV1.ListNamespacedEndpointSliceAsync(_namespace, labelSelector: _selector, cancellationToken: stop).ConfigureAwait(false);
        _slices.Clear();
        foreach (var slice in list.Items) _slices[slice.Metadata.Name] = slice;
        Interlocked.Increment(ref _lists);
        Publish();
        return list.Metadata.ResourceVersion;
    }

    /// <summary>One watch call; returns the version to resume from, or null to relist.</summary>
    private async Task<string?> WatchAsync(string version, CancellationToken stop)
    {
        using var watchdog = new CancellationTokenSource(TimeSpan.FromSeconds(_options.WatchTimeoutSeconds) + WatchdogMargin, _time);
        using var watch = CancellationTokenSource.CreateLinkedTokenSource(stop, watchdog.Token);
        Exception? streamError = null;
        try
        {
            var response = _client.DiscoveryV1.ListNamespacedEndpointSliceWithHttpMessagesAsync(_namespace,
                allowWatchBookmarks: true, labelSelector: _selector, resourceVersion: version,
                timeoutSeconds: _options.WatchTimeoutSeconds, watch: true, cancellationToken: watch.Token);
            // The typed extension is the client's way to watch a list call (as the operator's informer does).
#pragma warning disable CS0618
            var events = response.WatchAsync<V1EndpointSlice, V1EndpointSliceList>(e => streamError = e, watch.Token);
#pragma warning restore CS0618
            await foreach (var (type, slice) in events.ConfigureAwait(false))
            {
                Volatile.Write(ref _failures, 0);
                if (slice?.Metadata?.ResourceVersion is { Length: > 0 } seen) version = seen;
                switch (type)
                {
                    case WatchEventType.Added or WatchEventType.Modified:
                        _slices[slice!.Metadata.Name] = slice;
                        Publish();
                        break;
                    case WatchEventType.Deleted:
                        _slices.Remove(slice!.Metadata.Name);
                        Publish();
                        break;
                    default:
                        break;
                }
                if (IsGone(streamError)) return null;
            }
        }
        catch (OperationCanceledException) when (watchdog.IsCancellationRequested && !stop.IsCancellationRequested)
        {
            LogWatchdog(_logger, _options.WorkerService!);
            return version;
        }
        catch (HttpOperationException e) when (e.Response.StatusCode == HttpStatusCode.Gone)
        {
            return null;
        }
        catch (HttpRequestException e) when (e.InnerException is EndOfStreamException)
        {
            // The server closed the watch before its first event (its timeout, a restart): resume.
            return version;
        }
        if (IsGone(streamError)) return null;
        if (streamError is not null) throw new IOException("the EndpointSlice watch failed: " + streamError.Message, streamError);
        return version;
    }

    private void Publish()
    {
        var addresses = ServingEndpoints.From(_slices.Values, _options.PortName);
        if (_workers.SetAddresses(addresses))
            LogWorkers(_logger, _options.WorkerService!, addresses.Count, string.Join(", ", addresses.Select(a => a.Authority).Order(StringComparer.Ordinal)));
    }

    /// <summary>Between half and all of an exponential ceiling (jitter), so many routers do not reconnect in step.</summary>
    private TimeSpan NextBackoff()
    {
        int failures = Interlocked.Increment(ref _failures);
        double ceiling = Math.Min(_options.ReconnectMaxMs, _options.ReconnectBaseMs * Math.Pow(2, Math.Min(failures - 1, 30)));
        return TimeSpan.FromMilliseconds(ceiling / 2 + Random.Shared.NextDouble() * ceiling / 2);
    }

    private static bool IsGone(Exception? error) =>
        error is KubernetesException { Status.Code: (int)HttpStatusCode.Gone } or KubernetesException { Status.Reason: "Expired" or "Gone" };

    [LoggerMessage(Level = LogLevel.Information, Message = "Service {Service}: {Count} serving worker endpoints ({Addresses})")]
    private static partial void LogWorkers(ILogger logger, string service, int count, string addresses);

    [LoggerMessage(Level = LogLevel.Information, Message = "Service {Service}: EndpointSlice watch history expired (410), relisting")]
    private static partial void LogRelist(ILogger logger, string service);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Service {Service}: EndpointSlice list/watch failed, retrying in {DelayMs:0} ms: {Error}")]
    private static partial void LogFailed(ILogger logger, string service, double delayMs, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Service {Service}: EndpointSlice watch silent past its timeout, restarting it")]
    private static partial void LogWatchdog(ILogger logger, string service);
}
