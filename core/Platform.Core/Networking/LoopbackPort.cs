// A free TCP port on 127.0.0.1, for processes that must be told their port
// before they start (peers that list each other, redis-server, Garnet, the
// router of `platform up`). The port is released before it is returned, so a
// race with another process is possible but rare on one machine.
using System.Net;
using System.Net.Sockets;

namespace Platform.Core.Networking;

public static class LoopbackPort
{
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
