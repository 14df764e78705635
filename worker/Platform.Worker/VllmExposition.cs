// One Prometheus text exposition at GET /metrics from two sources: the vllm: metrics
// (prometheus-net, WorkerMetrics.Registry) followed by everything OpenTelemetry exports.
// Runs in the branch of the OpenTelemetry scraping endpoint, ahead of its exporter: the
// exporter is asked for the classic text format (an OpenMetrics answer would end in
// "# EOF", which must stay last) and writes into a buffer, then both go out as
// text/plain; version=0.0.4. The two never share a metric name (vllm: vs. the rest).
// prometheus-net 8 validates names against [a-zA-Z_][a-zA-Z0-9_]*, so the vLLM metrics are
// registered as "vllm_x" and renamed to "vllm:x" here; the registry holds nothing else, so
// the rename touches exactly the HELP, TYPE and sample lines of those families.
using System.Text;

namespace Platform.Worker;

internal static class VllmExposition
{
    private const string TextContentType = "text/plain; version=0.0.4; charset=utf-8";
    private const string Registered = "vllm_";
    private const string Exported = "vllm:";

    /// <summary>The name a vLLM metric is registered under in prometheus-net ("vllm:x" → "vllm_x").</summary>
    public static string RegisteredName(string vllmName)
    {
        if (!vllmName.StartsWith(Exported, StringComparison.Ordinal) || vllmName.IndexOf(':', Exported.Length) >= 0)
            throw new ArgumentException($"'{vllmName}' is not a vllm: name with a single colon after the prefix.", nameof(vllmName));
        return Registered + vllmName[Exported.Length..];
    }

    /// <summary>prometheus-net's text with "vllm_" family names written as vLLM spells them ("vllm:").</summary>
    public static string ToVllmNames(string exposition)
    {
        var result = new StringBuilder(exposition.Length);
        foreach (var line in exposition.Split('\n'))
        {
            if (result.Length > 0) result.Append('\n');
            if (line.StartsWith(Registered, StringComparison.Ordinal)) result.Append(Exported).Append(line, Registered.Length, line.Length - Registered.Length);
            else if (line.StartsWith("# HELP " + Registered, StringComparison.Ordinal) || line.StartsWith("# TYPE " + Registered, StringComparison.Ordinal))
                result.Append(line, 0, 7).Append(Exported).Append(line, 7 + Registered.Length, line.Length - 7 - Registered.Length);
            else result.Append(line);
        }
        return result.ToString();
    }

    public static async Task MergeAsync(HttpContext context, RequestDelegate next)
    {
        context.Request.Headers.Accept = "text/plain";
        var original = context.Response.Body;
        using var buffer = new MemoryStream();
        context.Response.Body = buffer;
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            context.Response.Body = original;
        }

        context.Response.ContentLength = null;
        if (context.Response.StatusCode == StatusCodes.Status200OK)
        {
            context.Response.ContentType = TextContentType;
            var metrics = context.RequestServices.GetRequiredService<WorkerMetrics>();
            using var vllm = new MemoryStream();
            await metrics.Registry.CollectAndExportAsTextAsync(vllm, context.RequestAborted).ConfigureAwait(false);
            var text = ToVllmNames(Encoding.UTF8.GetString(vllm.GetBuffer(), 0, (int)vllm.Length));
            await original.WriteAsync(Encoding.UTF8.GetBytes(text), context.RequestAborted).ConfigureAwait(false);
        }
        buffer.Position = 0;
        await buffer.CopyToAsync(original, context.RequestAborted).ConfigureAwait(false);
    }
}
