// The processes the `router` benchmark drives, started as `platform up` starts
// them: N platform-worker processes on loopback (free ports, one engine thread
// each, a fixed KV pool), then platform-router pointed at them with a policy.
// Between policies the router is restarted and the workers too: a worker has no
// API to drop its prefix cache, and a fresh process also resets its metrics.
// Also reads the router's Prometheus text (workers in the pool, the overhead
// histogram). Null pool or batch sizes leave the worker's own defaults; the
// `longprompt` mode uses that, with extra router switches (a long inactivity
// timeout) and the process ids for peak RSS.
using System.Globalization;
using Platform.Core.Processes;
using Platform.Core.Workers;
using Platform.Testing;

namespace Platform.Bench.Router;

public sealed record ClusterOptions(string ModelDir, int Workers, int? KvBlocksPerWorker, int ThreadsPerWorker, int? MaxBatchTokens)
{
    /// <summary>Switches appended to the router's command line (e.g. "--Router:InactivityTimeoutMs", "600000").</summary>
    public IReadOnlyList<string> ExtraRouterArgs { get; init; } = [];
}

public sealed class LocalCluster : IAsyncDisposable
{
    private readonly ClusterOptions _options;
    private readonly List<WorkerProcess> _workers = [];
    private ChildProcess? _router;

    public LocalCluster(ClusterOptions options) => _options = options;

    public Uri? RouterUrl { get; private set; }

    /// <summary>Process ids of the running workers, in start order.</summary>
    public IReadOnlyList<int> WorkerProcessIds => _workers.Select(w => w.Id).ToList();

    /// <summary>Process id of the running router, or null.</summary>
    public int? RouterProcessId => _router?.Id;

    /// <summary>Platform-worker settings on top of the cluster's for the next start (the KV tier's, when a run compares it).</summary>
    public WorkerArguments ExtraWorkerArgs { get; set; } = new();

    /// <summary>Starts fresh workers (stopping any running ones first), all at once.</summary>
    public async Task StartWorkersAsync(CancellationToken cancellationToken)
    {
        await StopWorkersAsync();
        var starts = Enumerable.Range(0, _options.Workers).Select(i => WorkerProcess.StartAsync(
            (ExtraWorkerArgs with
            {
                Model = _options.ModelDir, Port = 0, HttpPort = 0, WorkerId = $"worker-{i}", Threads = _options.ThreadsPerWorker,
                KvBlocks = _options.KvBlocksPerWorker, MaxBatchTokens = _options.MaxBatchTokens, Seed = 1, LogLevel = "Warning",
            }).ToArgs(), readyTimeout: TimeSpan.FromMinutes(5), cancellationToken: cancellationToken)).ToList();
        try
        {
            _workers.AddRange(await Task.WhenAll(starts));
        }
        catch
        {
            foreach (var t in starts.Where(t => t.IsCompletedSuccessfully)) await t.Result.DisposeAsync();
            throw;
        }
    }

    /// <summary>Starts the router with <paramref name="policy"/> and waits until every worker is in its pool.</summary>
    public async Task StartRouterAsync(string policy, CancellationToken cancellationToken)
    {
        await StopRouterAsync();
        string dll = Path.Combine(AppContext.BaseDirectory, "platform-router.dll");
        _router = ChildProcess.StartDotnet("router", dll,
        [
            "--model", _options.ModelDir, "--workers", string.Join(',', _workers.Select(w => w.GrpcAddress.ToString().TrimEnd('/'))),
            "--port", "0", "--policy", policy, "--Logging:LogLevel:Default", "Warning", .. _options.ExtraRouterArgs,
        ]);
        RouterUrl = new Uri(await _router.WaitForLineAsync("PLATFORM_ROUTER_LISTENING", TimeSpan.FromSeconds(60), cancellationToken));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (_router.HasExited) throw new InvalidOperationException($"the router exited during start:\n{_router.Tail}");
            try
            {
                var metrics = await http.GetStringAsync(new Uri(RouterUrl, "/metrics"), cancellationToken);
                if (PrometheusText.Gauge(metrics, "router_workers_available") >= _options.Workers) return;
            }
            catch (HttpRequestException)
            {
                // Not answering yet.
            }
            await Task.Delay(250, cancellationToken);
        }
        throw new InvalidOperationException($"the router did not see all {_options.Workers} workers within 60 s:\n{_router.Tail}");
    }

    /// <summary>The router's Prometheus text.</summary>
    public async Task<string> RouterMetricsAsync(HttpClient http, CancellationToken cancellationToken) =>
        await http.GetStringAsync(new Uri(RouterUrl ?? throw new InvalidOperationException("no router"), "/metrics"), cancellationToken);

    public async Task StopRouterAsync()
    {
        if (_router is null) return;
        await _router.StopAsync(TimeSpan.FromSeconds(15));
        await _router.DisposeAsync();
        _router = null;
        RouterUrl = null;
    }

    private async Task StopWorkersAsync()
    {
        foreach (var w in _workers) w.Terminate();
        foreach (var w in _workers)
        {
            try
            {
                await w.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
            }
            catch (TimeoutException)
            {
                // DisposeAsync kills it.
            }
            await w.DisposeAsync();
        }
        _workers.Clear();
    }

    public async ValueTask DisposeAsync()
    {
        await StopRouterAsync();
        await StopWorkersAsync();
    }
}

/// <summary>Just enough of the Prometheus text format for the figures the benchmark reads.</summary>
public static class PrometheusText
{
    /// <summary>Sum of the samples of <paramref name="name"/> (any labels), or NaN when absent.</summary>
    public static double Gauge(string text, string name)
    {
        double sum = double.NaN;
        foreach (var (_, value) in Samples(text, name))
            sum = double.IsNaN(sum) ? value : sum + value;
        return sum;
    }

    /// <summary>Cumulative histogram buckets (upper bound → count) of <paramref name="name"/>, summed over other labels.</summary>
    public static SortedDictionary<double, double> Buckets(string text, string name)
    {
        var buckets = new SortedDictionary<double, double>();
        foreach (var (labels, value) in Samples(text, name + "_bucket"))
        {
            int at = labels.IndexOf("le=\"", StringComparison.Ordinal);
            if (at < 0) continue;
            int end = labels.IndexOf('"', at + 4);
            string le = labels[(at + 4)..end];
            double bound = le == "+Inf" ? double.PositiveInfinity : double.Parse(le, CultureInfo.InvariantCulture);
            buckets[bound] = buckets.GetValueOrDefault(bound) + value;
        }
        return buckets;
    }

    /// <summary>The upper bound of the bucket holding quantile <paramref name="q"/> (an upper estimate), or NaN without samples.</summary>
    public static double QuantileUpperBound(SortedDictionary<double, double> buckets, double q)
    {
        ArgumentNullException.ThrowIfNull(buckets);
        if (buckets.Count == 0) return double.NaN;
        double total = buckets.Values.Max();
        if (total <= 0) return double.NaN;
        foreach (var (bound, count) in buckets)
            if (count >= q * total) return bound;
        return double.PositiveInfinity;
    }

    private static IEnumerable<(string Labels, double Value)> Samples(string text, string name)
    {
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#' || !line.StartsWith(name, StringComparison.Ordinal)) continue;
            var rest = line[name.Length..];
            string labels = "";
            if (rest.StartsWith('{'))
            {
                int close = rest.IndexOf('}', StringComparison.Ordinal);
                labels = rest[..(close + 1)];
                rest = rest[(close + 1)..];
            }
            else if (rest.Length == 0 || rest[0] != ' ') continue; // a longer metric name with this prefix
            var parts = rest.Trim().Split(' ');
            if (double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) yield return (labels, value);
        }
    }
}
