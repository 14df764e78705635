// Health checking of the workers discovery knows (WorkerDirectory.Changes: a
// loop starts for each added address and stops for each removed one; a removed
// worker leaves the pool at once and its connection is disposed when its
// in-flight requests are done). Every known worker is polled each
// HealthPeriodMs: GetInfo until it answers (its identity must agree with the
// pool's), then GetLoad. A worker that answers healthy and not draining joins
// the pool and gets a KV event subscription feeding the prefix index; one that
// fails a poll, reports unhealthy or draining leaves the pool, its subscription
// stops and the index forgets its blocks. It rejoins when it answers again (and
// its fresh snapshot replaces whatever it held before a restart).
using Grpc.Core;
using Platform.Core.Protos;
using Platform.Router.Configuration;
using Platform.Router.Model;
using Platform.Router.Policies;
using Platform.Router.Telemetry;
using CoreKv = Platform.Core.KvEvents;

namespace Platform.Router.Workers;

public sealed partial class WorkerMonitor : BackgroundService
{
    private readonly WorkerDirectory _workers;
    private readonly PrefixIndex _index;
    private readonly ServedModel _model;
    private readonly RouterMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger<WorkerMonitor> _logger;
    private readonly TimeSpan _period;
    private readonly TimeSpan _timeout;

    public WorkerMonitor(WorkerDirectory workers, PrefixIndex index, ServedModel model, RouterMetrics metrics, TimeProvider time,
        RouterOptions options, ILogger<WorkerMonitor> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        _workers = workers;
        _index = index;
        _model = model;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _period = TimeSpan.FromMilliseconds(options.HealthPeriodMs);
        _timeout = TimeSpan.FromMilliseconds(options.HealthTimeoutMs);
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "Each worker loop's token source is kept in `running` and disposed when its loop has ended (on removal or at the end).")]
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Changes are handled one at a time, so a worker that leaves and comes back under the same
        // address has fully left (pool, index) before its new connection starts.
        var running = new Dictionary<WorkerConnection, (CancellationTokenSource Stop, Task Loop)>();
        var retiring = new List<Task>();
        try
        {
            await foreach (var change in _workers.Changes.ReadAllAsync(stoppingToken).ConfigureAwait(false))
            {
                var c = change.Connection;
                if (change.Added)
                {
                    var stop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                    running[c] = (stop, WatchAsync(c, stop.Token));
                    LogDiscovered(_logger, c.State.Id);
                }
                else if (running.Remove(c, out var loop))
                {
                    await loop.Stop.CancelAsync().ConfigureAwait(false);
                    await loop.Loop.ConfigureAwait(false);
                    loop.Stop.Dispose();
                    LogForgotten(_logger, c.State.Id);
                    retiring.RemoveAll(t => t.IsCompleted);
                    retiring.Add(RetireAsync(c, stoppingToken));
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        await Task.WhenAll(running.Values.Select(r => r.Loop)).ConfigureAwait(false);
        foreach (var r in running.Values) r.Stop.Dispose();
        await Task.WhenAll(retiring).ConfigureAwait(false);
    }

    /// <summary>Disposes a removed worker's channel once the requests already on it have ended
    /// (a drained or vanished worker ends them; keep-alive pings notice a dead peer).</summary>
    private async Task RetireAsync(WorkerConnection c, CancellationToken stop)
    {
        while (c.State.InFlightRequests > 0 && !stop.IsCancellationRequested)
            await _time.DelayOrStop(_period, stop).ConfigureAwait(false);
        c.Dispose();
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "The subscription's token source is disposed when the subscription stops (worker left, or the loop ends).")]
    private async Task WatchAsync(WorkerConnection c, CancellationToken stop)
    {
        CancellationTokenSource? subscription = null;
        Task? subscriptionTask = null;
        string? lastProblem = null;
        while (!stop.IsCancellationRequested)
        {
            var problem = await CheckAsync(c, stop).ConfigureAwait(false);
            if (stop.IsCancellationRequested) break;
            if (problem is null && subscription is null)
            {
                subscription = CancellationTokenSource.CreateLinkedTokenSource(stop);
                subscriptionTask = SubscribeAsync(c, subscription.Token);
                _workers.Pool.Add(c.State);
                LogJoined(_logger, c.State.Id);
            }
            else if (problem is not null && subscription is not null)
            {
                _workers.Pool.Remove(c.State.Id);
                await subscription.CancelAsync().ConfigureAwait(false);
                await subscriptionTask!.ConfigureAwait(false);
                subscription.Dispose();
                subscription = null;
                _index.RemoveWorker(c.State.Id);
                LogLeft(_logger, c.State.Id, problem);
            }
            else if (problem is not null && problem != lastProblem)
            {
                LogStillOut(_logger, c.State.Id, problem);
            }
            lastProblem = problem;
            await _time.DelayOrStop(_period, stop).ConfigureAwait(false);
        }
        if (subscription is not null)
        {
            // Removed by discovery (or the router stops): no new placements, and the index forgets it.
            _workers.Pool.Remove(c.State.Id);
            await subscription.CancelAsync().ConfigureAwait(false);
            await subscriptionTask!.ConfigureAwait(false);
            subscription.Dispose();
            _index.RemoveWorker(c.State.Id);
        }
    }

    /// <summary>Null when the worker may serve; otherwise why not.</summary>
    private async Task<string?> CheckAsync(WorkerConnection c, CancellationToken stop)
    {
        using var timeout = new CancellationTokenSource(_timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, timeout.Token);
        try
        {
            if (c.Info is null)
            {
                var info = await c.Client.GetInfoAsync(new InfoRequest(), cancellationToken: linked.Token).ConfigureAwait(false);
                if (info.VocabSize != 0 && info.VocabSize != _model.Config.VocabSize)
                    return $"it serves a vocabulary of {info.VocabSize} but the router's --model has {_model.Config.VocabSize}; give both the same model directory.";
                if (_workers.Admit(info) is { } refusal) return "refused: " + refusal;
                c.Info = info;
            }
            var load = await c.Client.GetLoadAsync(new LoadRequest(), cancellationToken: linked.Token).ConfigureAwait(false);
            c.State.ReportLoad(new WorkerLoad(load.Running, load.Waiting, load.QueuedPrefillTokens, load.KvBlocksUsed, load.KvBlocksTotal));
            if (load.Draining) return "draining";
            if (!load.Healthy) return "reports unhealthy";
            return null;
        }
        catch (RpcException e)
        {
            // It may come back as a different process (restart): ask for its identity again.
            c.Info = null;
            return timeout.IsCancellationRequested ? $"no answer within {_timeout.TotalMilliseconds:0} ms" : $"{e.StatusCode}: {e.Status.Detail}";
        }
    }

    private async Task SubscribeAsync(WorkerConnection c, CancellationToken stop)
    {
        string id = c.State.Id;
        while (!stop.IsCancellationRequested)
        {
            string reason = "stream ended";
            try
            {
                using var call = c.Client.SubscribeKvEvents(new SubscribeKvEventsRequest(), cancellationToken: stop);
                while (await call.ResponseStream.MoveNext(stop).ConfigureAwait(false))
                {
                    var batch = call.ResponseStream.Current;
                    if (batch.IsSnapshot)
                    {
                        _index.ApplySnapshot(id, batch.SnapshotSequence,
                            batch.Snapshot.Select(b => new HeldBlock(b.BlockHash, b.ParentHash, (CoreKv.KvTier)(int)b.Tier)));
                        LogSnapshot(_logger, id, batch.Snapshot.Count, batch.SnapshotSequence);
                    }
                    if (batch.Events.Count == 0) continue;
                    var result = _index.ApplyEvents(id, batch.Events.Select(ToCore).ToList());
                    if (result.Status != IndexApplyStatus.Applied)
                    {
                        reason = result.Status == IndexApplyStatus.Gap
                            ? $"gap: expected #{result.ExpectedSequence}, got #{result.ReceivedSequence}"
                            : "events before a snapshot";
                        break;
                    }
                }
            }
            catch (RpcException e) when (!stop.IsCancellationRequested)
            {
                reason = $"{e.StatusCode}: {e.Status.Detail}";
            }
            catch (RpcException) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                break;
            }
            if (stop.IsCancellationRequested) break;
            _metrics.KvResync(id, reason.StartsWith("gap", StringComparison.Ordinal) ? "gap" : "reconnect");
            LogResubscribe(_logger, id, reason);
            await _time.DelayOrStop(_period, stop).ConfigureAwait(false);
        }
    }

    private static CoreKv.KvEvent ToCore(KvEvent e) => new(e.Sequence,
        e.Kind switch
        {
            KvEventKind.Stored => CoreKv.KvEventKind.BlockStored,
            KvEventKind.Removed => CoreKv.KvEventKind.BlockRemoved,
            _ => CoreKv.KvEventKind.Cleared,
        },
        e.BlockHash, e.ParentHash, (CoreKv.KvTier)(int)e.Tier);

    [LoggerMessage(Level = LogLevel.Information, Message = "Worker {Worker} discovered; health checking it")]
    private static partial void LogDiscovered(ILogger logger, string worker);

    [LoggerMessage(Level = LogLevel.Information, Message = "Worker {Worker} removed by discovery")]
    private static partial void LogForgotten(ILogger logger, string worker);

    [LoggerMessage(Level = LogLevel.Information, Message = "Worker {Worker} joined the pool")]
    private static partial void LogJoined(ILogger logger, string worker);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Worker {Worker} left the pool: {Reason}")]
    private static partial void LogLeft(ILogger logger, string worker, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Worker {Worker} is not in the pool: {Reason}")]
    private static partial void LogStillOut(ILogger logger, string worker, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "KV snapshot from {Worker}: {Blocks} blocks at #{Sequence}")]
    private static partial void LogSnapshot(ILogger logger, string worker, int blocks, long sequence);

    [LoggerMessage(Level = LogLevel.Information, Message = "Resubscribing to KV events of {Worker} ({Reason})")]
    private static partial void LogResubscribe(ILogger logger, string worker, string reason);
}

internal static class TimeProviderExtensions
{
    /// <summary>Waits, or returns early when stopping; never throws for the cancellation.</summary>
    public static Task DelayOrStop(this TimeProvider time, TimeSpan delay, CancellationToken stop) =>
        Task.Delay(delay, time, stop).ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
}
