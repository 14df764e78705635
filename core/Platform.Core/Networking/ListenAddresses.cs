// Where a server listens for a --host value. In a pod the operator passes the pod's own IP
// (--host $(POD_IP)) so that a node giving each pod its own address can run pods with equal
// ports side by side (the test kubelet does, on 127.0.0.x). But `kubectl port-forward` connects
// to the pod's loopback, which a pod-IP-only server would refuse; so a specific, non-loopback
// address is served on loopback as well. A loopback host (127.0.0.1, or a test kubelet's
// 127.0.0.x) and the wildcard (0.0.0.0, which already covers loopback) are served as given.
using System.Net;

namespace Platform.Core.Networking;

public static class ListenAddresses
{
    /// <summary>The addresses to bind for <paramref name="host"/>: it, plus 127.0.0.1 when it is a specific non-loopback address.</summary>
    public static IReadOnlyList<IPAddress> For(IPAddress host) =>
        IPAddress.IsLoopback(host) || host.Equals(IPAddress.Any) || host.Equals(IPAddress.IPv6Any)
            ? [host]
            : [host, host.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IPAddress.IPv6Loopback : IPAddress.Loopback];
}
