// The remote tier: encoded KV blocks in a Redis-compatible store (Redis, or the
// Garnet server `platform up` embeds) shared by every worker of a model, so a
// prefix computed once anywhere is fetched, not recomputed.
//
// Keys are "{KeyPrefix}{fingerprint id}:{block hash:x16}": namespaced by the
// model fingerprint, so blocks of different models or settings never meet, and
// under the operator's per-model prefix, so deleting a model can purge them.
// Values are BlockCodec blocks; a reader verifies every one (a corrupt, truncated
// or foreign value is a miss, counted by the caller).
//
// Faults never reach a request: every operation has a deadline
// (OperationTimeoutMs, enforced here rather than by StackExchange.Redis, which
// only notices timeouts on a 1 s heartbeat). A prefix fetch's deadline is one of
// progress: each block must arrive within OperationTimeoutMs of the previous one
// (a hung store is noticed in that time, while a long healthy fetch of many MB is
// not cut short), and the whole fetch is capped at MaxFetchMs; blocks that arrived
// before a deadline are still used; commands fail fast while the
// connection is down (BacklogPolicy.FailFast) and the multiplexer reconnects by
// itself; a Polly circuit breaker counts failed operations and, once open, makes
// every operation a free skip for BreakerBreakMs, then lets one probe through.
// Puts are batched (one pipelined batch per call), fetches pipeline up to
// PipelineDepth GETs and stop at the first missing block (hashes are chained, so
// nothing after a miss can be used). Fetched values arrive in pooled leases.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using Polly.CircuitBreaker;
using StackExchange.Redis;

namespace Platform.KvCache;

public sealed partial class RedisKvTier : IAsyncDisposable
{
    private readonly RemoteTierOptions _options;
    private readonly ConnectionMultiplexer _redis;
    private readonly IDatabase _db;
    private readonly string _keyPrefix;
    private readonly KvTierMetrics _metrics;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline<bool> _breaker;
    private readonly CircuitBreakerStateProvider _state = new();
    private readonly TimeSpan _timeout;
    private readonly TimeSpan? _ttl;
    private readonly TimeProvider _time;
    private DateTimeOffset _openUntil;

    private RedisKvTier(RemoteTierOptions options, ConnectionMultiplexer redis, string fingerprintId, KvTierMetrics metrics, ILogger logger, TimeProvider time)
    {
        _options = options;
        _redis = redis;
        _db = redis.GetDatabase();
        _keyPrefix = options.KeyPrefix + fingerprintId + ":";
        _metrics = metrics;
        _logger = logger;
        _timeout = TimeSpan.FromMilliseconds(options.OperationTimeoutMs);
        _ttl = options.TtlSeconds > 0 ? TimeSpan.FromSeconds(options.TtlSeconds) : null;
        _time = time;
        _breaker = new ResiliencePipelineBuilder<bool> { TimeProvider = time }
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions<bool>
            {
                FailureRatio = options.BreakerFailureRatio,
                MinimumThroughput = options.BreakerMinimumThroughput,
                SamplingDuration = TimeSpan.FromMilliseconds(options.BreakerSamplingMs),
                BreakDuration = TimeSpan.FromMilliseconds(options.BreakerBreakMs),
                StateProvider = _state,
                ShouldHandle = static args => ValueTask.FromResult(args.Outcome.Exception is not null || !args.Outcome.Result),
                OnOpened = args =>
                {
                    _openUntil = _time.GetUtcNow() + args.BreakDuration;
                    _metrics.BreakerTransition("opened");
                    LogBreakerOpened(_logger, args.BreakDuration.TotalSeconds);
                    return default;
                },
                OnHalfOpened = _ =>
                {
                    _metrics.BreakerTransition("half_open");
                    return default;
                },
                OnClosed = _ =>
                {
                    _metrics.BreakerTransition("closed");
                    LogBreakerClosed(_logger);
                    return default;
                },
            })
            .Build();
        metrics.Gauge("kv_tier_remote_breaker_open", "{state}", "1 while the remote store's circuit breaker is open (remote tier skipped)", () => BreakerOpen ? 1 : 0);
        metrics.Gauge("kv_tier_remote_connected", "{state}", "1 while connected to the remote store", () => _redis.IsConnected ? 1 : 0);
    }

    /// <summary>
    /// Connects (or keeps trying in the background: a store that is down at start is
    /// not an error, the tier is simply skipped until it answers).
    /// </summary>
    public static async Task<RedisKvTier> ConnectAsync(RemoteTierOptions options, string fingerprintId, KvTierMetrics metrics,
        ILogger? logger = null, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(metrics);
        var errors = options.Validate("KvTier:Remote").ToList();
        if (errors.Count > 0) throw new ArgumentException(string.Join(" ", errors));
        ConfigurationOptions config;
        try
        {
            config = ConfigurationOptions.Parse(options.Address!);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"KvTier:Remote:Address '{options.Address}' is not a Redis address: {e.Message} Use HOST:PORT.", e);
        }
        if (options.User is not null) config.User = options.User;
        if (options.Password is not null) config.Password = options.Password;
        if (options.Tls) config.Ssl = true;
        config.AbortOnConnectFail = false;
        config.ConnectTimeout = options.ConnectTimeoutMs;
        config.ConnectRetry = 1;
        config.SyncTimeout = Math.Max(1000, options.OperationTimeoutMs);
        config.AsyncTimeout = Math.Max(1000, options.OperationTimeoutMs);
        config.BacklogPolicy = BacklogPolicy.FailFast;
        config.ReconnectRetryPolicy = new LinearRetry(500);
        config.KeepAlive = 5;
        config.ClientName ??= "platform-kv";
        var redis = await ConnectionMultiplexer.ConnectAsync(config).WaitAsync(cancellationToken).ConfigureAwait(false);
        var log = logger ?? NullLogger.Instance;
        if (!redis.IsConnected) LogNotConnected(log, options.Address!);
        return new RedisKvTier(options, redis, fingerprintId, metrics, log, time ?? TimeProvider.System);
    }

    /// <summary>
    /// True while the breaker forbids calls. Polly moves Open → HalfOpen only when a call is
    /// attempted, so once the break has elapsed this turns false and the next operation probes.
    /// </summary>
    public bool BreakerOpen => _state.CircuitState switch
    {
        CircuitState.Isolated => true,
        CircuitState.Open => _time.GetUtcNow() < _openUntil,
        _ => false,
    };
    public CircuitState BreakerState => _state.CircuitState;
    public bool IsConnected => _redis.IsConnected;
    public int MaxValueBytes => _options.MaxValueBytes;
    public TimeSpan OperationTimeout => _timeout;

    public RedisKey Key(ulong hash) => _keyPrefix + hash.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Writes a batch of encoded blocks in one pipeline. Returns how many were stored: 0 when the
    /// breaker is open, the store failed or the deadline passed. Never throws for store faults.
    /// </summary>
    public async Task<int> PutAsync(IReadOnlyList<(ulong Hash, ReadOnlyMemory<byte> Encoded)> blocks, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (blocks.Count == 0) return 0;
        if (BreakerOpen)
        {
            _metrics.RemoteSkipped("put");
            return 0;
        }
        var state = new PutState(this, blocks);
        bool ok = await RunAsync("put", state, static async (s, ct) =>
        {
            var self = s.Tier;
            var batch = self._db.CreateBatch();
            var tasks = new Task<bool>[s.Blocks.Count];
            for (int i = 0; i < tasks.Length; i++)
                tasks[i] = batch.StringSetAsync(self.Key(s.Blocks[i].Hash), s.Blocks[i].Encoded, self._ttl);
            batch.Execute();
            await Task.WhenAll(tasks).WaitAsync(self._timeout, ct).ConfigureAwait(false);
            foreach (var t in tasks) if (t.Result) s.Stored++;
            return true;
        }, cancellationToken).ConfigureAwait(false);
        if (ok) _metrics.Written("remote", state.Stored);
        return ok ? state.Stored : 0;
    }

    /// <summary>
    /// Fetches blocks hashes[start], hashes[start+1], ... in order until one is missing, the
    /// consumer rejects one (<paramref name="accept"/> returns false: corrupt or foreign), the
    /// deadline passes or <paramref name="maxCount"/> blocks were taken. The consumer runs on the
    /// caller's flow, in order, and must copy what it keeps (the memory is pooled). Returns the
    /// number of consecutive blocks accepted.
    /// </summary>
    public async Task<int> FetchPrefixAsync(IReadOnlyList<ulong> hashes, int start, int maxCount, Func<int, ReadOnlyMemory<byte>, bool> accept,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(hashes);
        ArgumentNullException.ThrowIfNull(accept);
        int count = Math.Min(maxCount, hashes.Count - start);
        if (count <= 0) return 0;
        if (BreakerOpen)
        {
            _metrics.RemoteSkipped("get");
            return 0;
        }
        var state = new FetchState(this, hashes, start, count, accept);
        long began = System.Diagnostics.Stopwatch.GetTimestamp();
        await RunAsync("get", state, static (s, ct) => s.Tier.FetchCoreAsync(s, ct), cancellationToken).ConfigureAwait(false);
        _metrics.FetchDuration(System.Diagnostics.Stopwatch.GetElapsedTime(began).TotalSeconds);
        return state.Accepted;
    }

    private async Task<bool> FetchCoreAsync(FetchState s, CancellationToken ct)
    {
        var tasks = new Task<Lease<byte>?>[s.Count];
        int issued = 0;
        int depth = _options.PipelineDepth;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var cap = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token);
        cap.CancelAfter(_options.MaxFetchMs);
        deadline.CancelAfter(_timeout);
        try
        {
            for (; issued < Math.Min(depth, s.Count); issued++) tasks[issued] = _db.StringGetLeaseAsync(Key(s.Hashes[s.Start + issued]));
            for (int i = 0; i < s.Count; i++)
            {
                using var lease = await tasks[i].WaitAsync(cap.Token).ConfigureAwait(false);
                tasks[i] = null!;
                deadline.CancelAfter(_timeout); // progress: the next block gets a fresh budget
                if (issued < s.Count)
                {
                    tasks[issued] = _db.StringGetLeaseAsync(Key(s.Hashes[s.Start + issued]));
                    issued++;
                }
                if (lease is null) return true; // a miss ends the prefix; the store is fine
                if (!s.Accept(s.Start + i, lease.Memory)) return true;
                s.Accepted++;
            }
            return true;
        }
        finally
        {
            // GETs still in flight: give their pooled buffers back when they land.
            for (int i = 0; i < issued; i++)
                if (tasks[i] is { } t) _ = t.ContinueWith(static t => { if (t.IsCompletedSuccessfully) t.Result?.Dispose(); }, CancellationToken.None,
                    TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    /// <summary>Runs one store operation through the breaker; false = failed, timed out or skipped.</summary>
    private async Task<bool> RunAsync<TState>(string op, TState state, Func<TState, CancellationToken, Task<bool>> action, CancellationToken cancellationToken)
    {
        try
        {
            return await _breaker.ExecuteAsync(static async (ctx, ct) => await ctx.action(ctx.state, ct).ConfigureAwait(false),
                (action, state), cancellationToken).ConfigureAwait(false);
        }
        catch (BrokenCircuitException)
        {
            _metrics.RemoteSkipped(op);
            return false;
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            _metrics.RemoteError(op, "timeout");
            LogOperationFailed(_logger, op, e.GetType().Name, e.Message);
            return false;
        }
        catch (Exception e) when (e is RedisException or ObjectDisposedException or InvalidOperationException)
        {
            _metrics.RemoteError(op, "error");
            LogOperationFailed(_logger, op, e.GetType().Name, e.Message);
            return false;
        }
    }

    public async ValueTask DisposeAsync() => await _redis.DisposeAsync().ConfigureAwait(false);

    private sealed class PutState(RedisKvTier tier, IReadOnlyList<(ulong Hash, ReadOnlyMemory<byte> Encoded)> blocks)
    {
        public RedisKvTier Tier { get; } = tier;
        public IReadOnlyList<(ulong Hash, ReadOnlyMemory<byte> Encoded)> Blocks { get; } = blocks;
        public int Stored { get; set; }
    }

    private sealed class FetchState(RedisKvTier tier, IReadOnlyList<ulong> hashes, int start, int count, Func<int, ReadOnlyMemory<byte>, bool> accept)
    {
        public RedisKvTier Tier { get; } = tier;
        public IReadOnlyList<ulong> Hashes { get; } = hashes;
        public int Start { get; } = start;
        public int Count { get; } = count;
        public Func<int, ReadOnlyMemory<byte>, bool> Accept { get; } = accept;
        public int Accepted { get; set; }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Remote KV store {Address} is not reachable yet; the remote tier is skipped until it answers")]
    private static partial void LogNotConnected(ILogger logger, string address);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Remote KV store circuit opened: remote tier skipped for {Seconds} s (serving from device and host)")]
    private static partial void LogBreakerOpened(ILogger logger, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Remote KV store circuit closed: remote tier resumed")]
    private static partial void LogBreakerClosed(ILogger logger);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Remote KV {Op} failed: {Kind}: {Message}")]
    private static partial void LogOperationFailed(ILogger logger, string op, string kind, string message);
}
