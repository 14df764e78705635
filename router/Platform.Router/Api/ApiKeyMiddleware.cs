// Optional bearer-key authentication. With keys configured, every route except
// the probes and the scrape endpoint (/healthz, /readyz, /metrics, as vLLM does:
// kubelets and Prometheus, the operator's autoscaler among them, carry no key)
// requires "Authorization: Bearer <key>"; anything else gets OpenAI's 401 body.
// Keys are compared in constant time.
using System.Security.Cryptography;
using System.Text;

namespace Platform.Router.Api;

public sealed class ApiKeyMiddleware
{
    /// <summary>Paths served without a key (exact match): health, readiness and Prometheus metrics.</summary>
    public static readonly IReadOnlyList<string> Exempt = ["/healthz", "/readyz", "/metrics", "/health"];

    private readonly RequestDelegate _next;
    private readonly byte[][] _keys;

    public ApiKeyMiddleware(RequestDelegate next, IReadOnlyList<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        _next = next;
        _keys = keys.Select(k => Encoding.UTF8.GetBytes(k)).ToArray();
    }

    public Task InvokeAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var path = context.Request.Path;
        if (_keys.Length == 0 || IsExempt(path)) return _next(context);
        string header = context.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            var presented = Encoding.UTF8.GetBytes(header[scheme.Length..].Trim());
            bool ok = false;
            foreach (var key in _keys) ok |= CryptographicOperations.FixedTimeEquals(presented, key);
            if (ok) return _next(context);
        }
        return new ApiError(401, header.Length == 0
                ? "You didn't provide an API key; send it as 'Authorization: Bearer YOUR_KEY'."
                : "Incorrect API key provided.", ApiError.InvalidRequest, null, "invalid_api_key")
            .WriteAsync(context);
    }

    private static bool IsExempt(PathString path)
    {
        foreach (var exempt in Exempt)
        {
            if (path.Equals(exempt, StringComparison.Ordinal)) return true;
        }
        return false;
    }
}
