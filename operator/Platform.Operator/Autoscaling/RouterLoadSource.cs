// Reads a model's load from its router's Prometheus endpoint (GET /metrics on the router
// Service). The two series are the contract with the router, named once in Core
// (Platform.Core.Telemetry.RouterMetricNames; docs/operator.md):
//   platform_router_queued_prefill_tokens  gauge, summed over all its series
//   platform_router_kv_utilization         gauge in [0,1], averaged over its series
// No reading is never silent: the result then says why (router unreachable, an HTTP error,
// or which contract series the exposition lacks), and the reconciler logs a warning,
// counts it (platform_operator_autoscale_no_reading_total{reason}) and records an Event.
using System.Globalization;
using System.Net;
using Platform.Core.Telemetry;
using Platform.Operator.Api;
using Platform.Operator.Builders;

namespace Platform.Operator.Autoscaling;

public interface IRouterLoadSource
{
    Task<RouterLoadReading> GetLoadAsync(LongContextModel model, CancellationToken cancellationToken);
}

/// <summary>Why a scrape gave no load.</summary>
public enum NoReadingReason
{
    /// <summary>The router could not be reached (connection refused, DNS, timeout).</summary>
    Unreachable,
    /// <summary>The router answered /metrics with a non-success status (e.g. 401 from an old router that guards /metrics).</summary>
    HttpError,
    /// <summary>The exposition lacks a contract series: the router and operator disagree on the metric contract.</summary>
    MissingSeries,
}

/// <summary>A load, or why there is none (<see cref="Problem"/> names the fix).</summary>
public sealed record RouterLoadReading(RouterLoad? Load, NoReadingReason? Reason, string? Problem)
{
    public static RouterLoadReading Of(RouterLoad load) => new(load, null, null);

    public static RouterLoadReading None(NoReadingReason reason, string problem) => new(null, reason, problem);
}

public sealed class PrometheusRouterLoadSource : IRouterLoadSource
{
    private readonly HttpClient _http;

    public PrometheusRouterLoadSource(HttpClient http) => _http = http;

    public async Task<RouterLoadReading> GetLoadAsync(LongContextModel model, CancellationToken cancellationToken)
    {
        var url = Names.Endpoint(model.Metadata.Name, model.Metadata.NamespaceProperty) + "/metrics";
        string text;
        try
        {
            using var response = await _http.GetAsync(new Uri(url), cancellationToken).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                return RouterLoadReading.None(NoReadingReason.HttpError,
                    $"GET {url} answered {(int)response.StatusCode} {response.ReasonPhrase}" +
                    (response.StatusCode == HttpStatusCode.Unauthorized ? "; the router must serve /metrics without its API key (routers of this version do)." : "."));
            }

            text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            return RouterLoadReading.None(NoReadingReason.Unreachable, $"GET {url} failed: {e.Message}");
        }
        catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            return RouterLoadReading.None(NoReadingReason.Unreachable, $"GET {url} timed out: {e.Message}");
        }

        return Parse(text);
    }

    /// <summary>Parses Prometheus text exposition; without every contract series the reading says which are missing.</summary>
    public static RouterLoadReading Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        double queued = 0, kvSum = 0;
        int queuedSeries = 0, kvSeries = 0;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var nameEnd = line.IndexOfAny([' ', '{']);
            if (nameEnd <= 0)
            {
                continue;
            }

            var name = line[..nameEnd];
            var valueStart = line[nameEnd] == '{' ? line.IndexOf('}', nameEnd) + 1 : nameEnd;
            var fields = line[valueStart..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0 || !double.TryParse(fields[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || double.IsNaN(value))
            {
                continue;
            }

            if (name == RouterMetricNames.QueuedPrefillTokens)
            {
                queued += value;
                queuedSeries++;
            }
            else if (name == RouterMetricNames.KvUtilization)
            {
                kvSum += value;
                kvSeries++;
            }
        }

        var missing = new List<string>();
        if (queuedSeries == 0) missing.Add(RouterMetricNames.QueuedPrefillTokens);
        if (kvSeries == 0) missing.Add(RouterMetricNames.KvUtilization);
        if (missing.Count > 0)
        {
            return RouterLoadReading.None(NoReadingReason.MissingSeries,
                $"the router's /metrics lacks {string.Join(" and ", missing)}; run a router that exports the autoscaler's series (Platform.Core.Telemetry.RouterMetricNames).");
        }

        return RouterLoadReading.Of(new RouterLoad(queued, kvSum / kvSeries));
    }
}
