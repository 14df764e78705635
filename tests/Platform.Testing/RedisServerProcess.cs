// A redis-server child process (through Core's ChildProcess) on a loopback port,
// for tests and the benchmark: the tier is tested against the real server,
// including stopping it and starting it again on the same port mid-test. Not for
// production (no persistence).
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Platform.Core.Networking;
using Platform.Core.Processes;

namespace Platform.Testing;

public sealed class RedisServerProcess : IAsyncDisposable
{
    private ChildProcess? _process;
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
        string[] args = ["--port", Port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--loglevel", "warning", .. _extraArgs];
        _process = ChildProcess.Start("redis-server", _executable, args);
        var until = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < until)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"redis-server exited with {_process.ExitCode} (port {Port} taken?). Its last output:{Environment.NewLine}{_process.Tail}");
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
        _process.Kill();
        await _process.DisposeAsync().ConfigureAwait(false);
        _process = null;
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);
}
