// Reads a model's load from its router's Prometheus endpoint (GET /metrics on the router
// Service). The two series are the contract with the router (docs/operator.md):
//   platform_router_queued_prefill_tokens  gauge, summed over all its series
//   platform_router_kv_utilization         gauge in [0,1], averaged over its series (one per worker)
// A router that cannot be reached gives no reading, and the autoscaler then holds the count.
using System.Globalization;
using Platform.Operator.Api;
using Platform.Operator.Builders;

namespace Platform.Operator.Autoscaling;

public interface IRouterLoadSource
{
    Task<RouterLoad?> GetLoadAsync(LongContextModel model, CancellationToken cancellationToken);
}

public sealed class PrometheusRouterLoadSource : IRouterLoadSource
{
    public const string QueuedMetric = "platform_router_queued_prefill_tokens";
    public const string KvMetric = "platform_router_kv_utilization";
    private readonly HttpClient _http;

    public PrometheusRouterLoadSource(HttpClient http) => _http = http;

    public async Task<RouterLoad?> GetLoadAsync(LongContextModel model, CancellationToken cancellationToken)
    {
        var url = Names.Endpoint(model.Metadata.Name, model.Metadata.NamespaceProperty) + "/metrics";
        string text;
        try
        {
            text = await _http.GetStringAsync(new Uri(url), cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException)
        {
            return null;
        }

        return Parse(text);
    }

    /// <summary>Parses Prometheus text exposition; null when the queue metric is absent.</summary>
    public static RouterLoad? Parse(string text)
    {
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

            if (name == QueuedMetric)
            {
                queued += value;
                queuedSeries++;
            }
            else if (name == KvMetric)
            {
                kvSum += value;
                kvSeries++;
            }
        }

        return queuedSeries == 0 ? null : new RouterLoad(queued, kvSeries == 0 ? 0 : kvSum / kvSeries);
    }
}
