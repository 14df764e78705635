// kube-proxy for one Service port: listens on the Service's loopback address and port and pipes
// each connection to one of the Service's ready endpoints, chosen round-robin at connect time.
// A connection with no ready endpoint is closed at once (a real ClusterIP gives "connection
// refused" in that case).
using System.Net;
using System.Net.Sockets;

namespace Platform.Testing.Kubernetes.Kubelet;

internal sealed class ServiceProxy : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private volatile IReadOnlyList<IPEndPoint> _endpoints = [];
    private int _next;

    public ServiceProxy(string ip, int port)
    {
        _listener = new TcpListener(IPAddress.Parse(ip), port);
        _listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public void SetEndpoints(IReadOnlyList<IPEndPoint> endpoints) => _endpoints = endpoints;

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = PipeAsync(client);
        }
    }

    private async Task PipeAsync(Socket client)
    {
        using var _ = client;
        var endpoints = _endpoints;
        if (endpoints.Count == 0) return;
        var target = endpoints[(int)((uint)Interlocked.Increment(ref _next) % endpoints.Count)];
        using var upstream = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await upstream.ConnectAsync(target, _stop.Token).ConfigureAwait(false);
            await using var a = new NetworkStream(client, ownsSocket: false);
            await using var b = new NetworkStream(upstream, ownsSocket: false);
            var up = CopyThenShutdownAsync(a, upstream);
            var down = CopyThenShutdownAsync(b, client);
            await Task.WhenAll(up, down).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Either side went away: the other is closed with it, as a proxied connection would be.
        }
    }

    private async Task CopyThenShutdownAsync(Stream from, Socket to)
    {
        await using var toStream = new NetworkStream(to, ownsSocket: false);
        try
        {
            await from.CopyToAsync(toStream, _stop.Token).ConfigureAwait(false);
        }
        finally
        {
            try { to.Shutdown(SocketShutdown.Send); } catch (SocketException) { /* already closed */ }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        try { await _accepting.ConfigureAwait(false); } catch (OperationCanceledException) { /* stopping */ }
        _stop.Dispose();
    }
}
