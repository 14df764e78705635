// Which worker addresses a set of EndpointSlices offers: a pure function, so
// the readiness rule is tested alone. The operator's headless worker Service
// sets publishNotReadyAddresses (peers must resolve each other while loading),
// and for such a Service Kubernetes reports every endpoint as `ready`; the
// pod's real readiness is in `serving`. So an endpoint counts when `serving`
// (or, where a cluster does not set it, `ready`) is not false and it is not
// `terminating`: a worker that is loading, failing its readiness probe or
// draining after SIGTERM is left out.
using k8s.Models;

namespace Platform.Router.Discovery;

public static class ServingEndpoints
{
    /// <summary>gRPC addresses (http://IP:PORT) of the serving endpoints that expose the named port.</summary>
    public static IReadOnlySet<Uri> From(IEnumerable<V1EndpointSlice> slices, string portName)
    {
        ArgumentNullException.ThrowIfNull(slices);
        var result = new HashSet<Uri>();
        foreach (var slice in slices)
        {
            if (slice.AddressType is not ("IPv4" or "IPv6")) continue;
            var port = slice.Ports?.FirstOrDefault(p => string.Equals(p.Name, portName, StringComparison.Ordinal))?.Port;
            if (port is not { } number) continue;
            foreach (var endpoint in slice.Endpoints ?? [])
            {
                var conditions = endpoint.Conditions;
                bool serving = conditions?.Serving ?? conditions?.Ready ?? true;
                if (!serving || conditions?.Terminating == true) continue;
                foreach (var address in endpoint.Addresses ?? [])
                {
                    var host = slice.AddressType == "IPv6" ? $"[{address}]" : address;
                    if (Uri.TryCreate($"http://{host}:{number}", UriKind.Absolute, out var uri)) result.Add(uri);
                }
            }
        }
        return result;
    }
}
