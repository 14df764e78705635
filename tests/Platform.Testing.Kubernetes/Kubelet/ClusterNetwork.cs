// The test cluster's network: a loopback address per pod (127.0.0.10 upwards, so identical
// container ports never collide) and per Service (127.0.1.x, where a small TCP proxy plays
// kube-proxy), and the cluster's DNS names for them. Pods see the names through a hosts file
// bind-mounted at /etc/hosts (as a kubelet manages /etc/hosts in a pod); the test process, which
// cannot change its own resolver, uses CreateHttpHandler(), whose connect step looks names up here.
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Platform.Testing.Kubernetes.Kubelet;

public sealed class ClusterNetwork
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, string> _podIps = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _serviceIps = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _names = new(StringComparer.Ordinal);
    private readonly string _hostsFile;
    private string _written = "";

    public ClusterNetwork(string hostsFile)
    {
        _hostsFile = hostsFile;
        Write();
    }

    public string HostsFile => _hostsFile;

    /// <summary>The pod's address: stable while the pod object lives, fresh for a new pod.</summary>
    public string PodIp(string podKey)
    {
        lock (_lock)
        {
            if (_podIps.TryGetValue(podKey, out var ip)) return ip;
            var used = _podIps.Values.ToHashSet(StringComparer.Ordinal);
            for (int n = 10; n < 65_000; n++)
            {
                var candidate = $"127.0.{n / 250}.{(n % 250) + 2}";
                if (n / 250 == 1) continue; // 127.0.1.x is for Services
                if (used.Contains(candidate)) continue;
                _podIps[podKey] = candidate;
                return candidate;
            }
            throw new InvalidOperationException("out of loopback addresses for pods");
        }
    }

    public void ReleasePod(string podKey)
    {
        lock (_lock) _podIps.Remove(podKey);
    }

    public string ServiceIp(string serviceKey)
    {
        lock (_lock)
        {
            if (_serviceIps.TryGetValue(serviceKey, out var ip)) return ip;
            ip = $"127.0.1.{_serviceIps.Count + 2}";
            _serviceIps[serviceKey] = ip;
            return ip;
        }
    }

    /// <summary>Replaces the DNS table (name → address) and rewrites the hosts file in place when it changed
    /// (in place: pods hold it bind-mounted, so its inode must stay).</summary>
    public void SetNames(IReadOnlyDictionary<string, string> names)
    {
        lock (_lock)
        {
            _names.Clear();
            foreach (var (name, ip) in names) _names[name] = ip;
            Write();
        }
    }

    public string? Resolve(string host)
    {
        if (IPAddress.TryParse(host, out _)) return host;
        lock (_lock) return _names.TryGetValue(host.TrimEnd('.'), out var ip) ? ip : null;
    }

    /// <summary>An HTTP handler that resolves cluster names (pod and Service DNS) as a pod would, for the
    /// test's own clients and for an in-process operator.</summary>
    public SocketsHttpHandler CreateHttpHandler() => new()
    {
        ConnectCallback = async (context, ct) =>
        {
            var host = context.DnsEndPoint.Host;
            var address = Resolve(host) is { } ip ? IPAddress.Parse(ip)
                : (await Dns.GetHostAddressesAsync(host, ct).ConfigureAwait(false)).First();
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, context.DnsEndPoint.Port), ct).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
        PooledConnectionLifetime = TimeSpan.FromSeconds(5),
    };

    private void Write()
    {
        var text = new StringBuilder("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
        foreach (var (name, ip) in _names.OrderBy(kv => kv.Key, StringComparer.Ordinal)) text.Append(ip).Append(' ').Append(name).Append('\n');
        var content = text.ToString();
        if (content == _written) return;
        // Truncate and rewrite the same file (FileMode.Create keeps the inode of an existing file).
        using (var stream = new FileStream(_hostsFile, FileMode.Create, FileAccess.Write, FileShare.ReadWrite))
        {
            stream.Write(Encoding.ASCII.GetBytes(content));
        }
        _written = content;
    }
}
