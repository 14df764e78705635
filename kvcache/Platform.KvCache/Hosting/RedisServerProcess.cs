// A redis-server child process on a loopback port, for tests and the benchmark:
// the tier is tested against the real server, including stopping it and starting
// it again on the same port mid-test. Not for production (no persistence).
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Platform.Core.Networking;

namespace Platform.KvCache.Hosting;

public sealed class RedisServerProcess : IAsyncDisposable
{
    private Process? _process;
    private readonly string _executable;
    private readonly string[] _extraArgs;

    private RedisServerProcess(string executable, int port, string[] extraArgs)
    {
        _executable = executable;
        Port = port;
        _extraArgs = extraArgs;
    }

    public int Port { get; }
    public string Address => $"127.0.0.1:{Port}";
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Starts redis-server (from $REDIS_SERVER, else /usr/bin/redis-server) on a free loopback port.</summary>
    public static async Task<RedisServerProcess> StartAsync(params string[] extraArgs)
    {
        string exe = Environment.GetEnvironmentVariable("REDIS_SERVER") ?? "/usr/bin/redis-server";
        if (!File.Exists(exe)) throw new FileNotFoundException($"redis-server not found at {exe}; install it (apt-get install redis-server) or set REDIS_SERVER.", exe);
        var server = new RedisServerProcess(exe, LoopbackPort.Free(), extraArgs);
        await server.StartAgainAsync().ConfigureAwait(false);
        return server;
    }

    /// <summary>(Re)starts the server on the same port; returns once it accepts connections.</summary>
    public async Task StartAgainAsync()
    {
        if (IsRunning) return;
        var psi = new ProcessStartInfo(_executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning" })
            psi.ArgumentList.Add(a);
        foreach (var a in _extraArgs) psi.ArgumentList.Add(a);
        _process = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var until = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < until)
        {
            if (_process.HasExited) throw new InvalidOperationException($"redis-server exited with {_process.ExitCode} (port {Port} taken?)");
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, Port).ConfigureAwait(false);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(20).ConfigureAwait(false);
            }
        }
        throw new TimeoutException($"redis-server did not accept connections on {Port} within 10 s");
    }

    /// <summary>Kills the server (SIGKILL): clients see the connection drop.</summary>
    public async Task StopAsync()
    {
        if (_process is null) return;
        if (!_process.HasExited) _process.Kill();
        await _process.WaitForExitAsync().ConfigureAwait(false);
        _process.Dispose();
        _process = null;
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);
}
