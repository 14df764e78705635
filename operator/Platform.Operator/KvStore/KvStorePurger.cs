// Purges a model's keys from the remote KV tier (Redis-compatible) when its LongContextModel is
// deleted with spec.kvCache.remote.purgeOnDelete. The operator hands every worker a key prefix
// (engine.json: kvCache.remote.keyPrefix, see Names.KvKeyPrefix) and deletes exactly the keys
// under it: SCAN in pages (never KEYS, which blocks the server) and DEL in batches, on every
// primary. A failure throws, so the finalizer stays and the reconcile is retried with backoff.
using StackExchange.Redis;

namespace Platform.Operator.KvStore;

public interface IKvStorePurger
{
    /// <summary>Deletes every key starting with <paramref name="keyPrefix"/>; returns how many went.</summary>
    Task<long> PurgeAsync(string address, string? password, string keyPrefix, CancellationToken cancellationToken);
}

public sealed class RedisKvStorePurger : IKvStorePurger
{
    private const int PageSize = 500;
    private readonly TimeSpan _timeout;

    /// <summary>Connect and command timeout; StackExchange.Redis's default of 5 s unless given.</summary>
    public RedisKvStorePurger(TimeSpan? timeout = null) => _timeout = timeout ?? TimeSpan.FromSeconds(5);

    public async Task<long> PurgeAsync(string address, string? password, string keyPrefix, CancellationToken cancellationToken)
    {
        var options = ConfigurationOptions.Parse(address);
        options.Password = password;
        options.AbortOnConnectFail = true;
        options.ConnectTimeout = (int)_timeout.TotalMilliseconds;
        options.SyncTimeout = (int)_timeout.TotalMilliseconds;
        options.AsyncTimeout = (int)_timeout.TotalMilliseconds;
        options.ConnectRetry = 1;
        await using var redis = await ConnectionMultiplexer.ConnectAsync(options).WaitAsync(cancellationToken).ConfigureAwait(false);
        var db = redis.GetDatabase();
        long deleted = 0;
        foreach (var endpoint in redis.GetEndPoints())
        {
            var server = redis.GetServer(endpoint);
            if (server.IsReplica)
            {
                continue;
            }

            var batch = new List<RedisKey>(PageSize);
            await foreach (var key in server.KeysAsync(pattern: keyPrefix + "*", pageSize: PageSize).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                batch.Add(key);
                if (batch.Count == PageSize)
                {
                    deleted += await db.KeyDeleteAsync([.. batch]).ConfigureAwait(false);
                    batch.Clear();
                }
            }

            if (batch.Count > 0)
            {
                deleted += await db.KeyDeleteAsync([.. batch]).ConfigureAwait(false);
            }
        }

        return deleted;
    }
}
