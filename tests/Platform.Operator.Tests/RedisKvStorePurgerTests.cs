// The Redis purger against a real redis-server (started on a free loopback port for the test):
// it deletes every key under the model's prefix, in several SCAN pages, and nothing else.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Platform.Operator.KvStore;
using StackExchange.Redis;

namespace Platform.Operator.Tests;

public sealed class RedisKvStorePurgerTests : IAsyncLifetime
{
    private Process? _redis;
    private int _port;

    public static string? RedisServer { get; } = Environment.GetEnvironmentVariable("PATH")?
        .Split(Path.PathSeparator).Select(d => Path.Combine(d, "redis-server")).FirstOrDefault(File.Exists);

    public async Task InitializeAsync()
    {
        if (RedisServer is null)
        {
            return;
        }

        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            _port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        _redis = Process.Start(new ProcessStartInfo(RedisServer, ["--port", _port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        })!;

        // Ready when it logs that it accepts connections.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (await _redis.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.Contains("Ready to accept connections", StringComparison.Ordinal))
            {
                return;
            }
        }

        throw new InvalidOperationException("redis-server exited before it was ready");
    }

    public Task DisposeAsync()
    {
        if (_redis is { HasExited: false })
        {
            _redis.Kill();
        }

        _redis?.Dispose();
        return Task.CompletedTask;
    }

    [RedisFact]
    public async Task Purge_deletes_exactly_the_prefixed_keys()
    {
        await using (var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{_port}"))
        {
            var db = redis.GetDatabase();
            var batch = db.CreateBatch();
            var writes = new List<Task>();
            for (var i = 0; i < 1234; i++)
            {
                writes.Add(batch.StringSetAsync($"lcm:ns:model:block:{i}", "kv"));
            }

            writes.Add(batch.StringSetAsync("lcm:ns:model-2:block:1", "other model"));
            writes.Add(batch.StringSetAsync("lcm:other:model:block:1", "other namespace"));
            batch.Execute();
            await Task.WhenAll(writes);
        }

        var purged = await new RedisKvStorePurger().PurgeAsync($"127.0.0.1:{_port}", null, "lcm:ns:model:", CancellationToken.None);

        Assert.Equal(1234, purged);
        await using var check = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{_port},allowAdmin=true");
        var server = check.GetServer(check.GetEndPoints()[0]);
        Assert.Equal(2, await server.DatabaseSizeAsync());
        Assert.True(await check.GetDatabase().KeyExistsAsync("lcm:ns:model-2:block:1"));
    }

    [RedisFact]
    public async Task An_unreachable_store_throws_so_the_finalizer_stays()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var unused = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        await Assert.ThrowsAsync<RedisConnectionException>(() => new RedisKvStorePurger(TimeSpan.FromMilliseconds(500)).PurgeAsync($"127.0.0.1:{unused}", null, "lcm:x:y:", CancellationToken.None));
    }

    private sealed class RedisFactAttribute : FactAttribute
    {
        public RedisFactAttribute()
        {
            if (RedisServer is null)
            {
                Skip = "redis-server is not installed (scripts/install-deps.sh installs it)";
            }
        }
    }
}
