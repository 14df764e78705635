// Runs Microsoft Garnet inside this process on a loopback port: the shared KV
// store of a one-machine cluster (`platform up`) without installing Redis.
// Workers reach it over RESP like any Redis. Memory is bounded (--memory);
// without a storage tier Garnet drops the oldest records beyond it, which for a
// cache of recomputable blocks is the right behaviour.
using Garnet;
using Platform.Core.Networking;

namespace Platform.KvCache.Garnet;

public sealed class EmbeddedGarnet : IDisposable
{
    private readonly GarnetServer _server;

    private EmbeddedGarnet(GarnetServer server, int port)
    {
        _server = server;
        Port = port;
    }

    public int Port { get; }
    public string Address => $"127.0.0.1:{Port}";

    /// <summary>Starts Garnet on 127.0.0.1 (<paramref name="port"/> 0 = a free port) with a memory budget such as "1g".</summary>
    public static EmbeddedGarnet Start(int port = 0, string memory = "1g")
    {
        if (port == 0) port = LoopbackPort.Free();
        string[] args = ["--bind", "127.0.0.1", "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--memory", memory, "--index", "64m"];
        GarnetServer server;
        try
        {
            server = new GarnetServer(args);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidOperationException($"could not start the embedded Garnet server on port {port}: {e.Message}", e);
        }
        server.Start();
        return new EmbeddedGarnet(server, port);
    }

    public void Dispose() => _server.Dispose();
}
