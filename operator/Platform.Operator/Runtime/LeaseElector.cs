// Leader election on a coordination.k8s.io/v1 Lease, so two operator replicas never both act.
// Same rules as client-go: a standby takes the lease only after it has seen the holder's record
// unchanged for a whole lease duration (measured on its own clock, immune to clock skew); the
// leader renews every retry period and steps down when it cannot renew within the renew
// deadline; on a clean stop it releases the lease so a standby takes over at once. Writes use
// the Lease's resourceVersion, so two candidates racing for it get a 409 and only one wins.
// A standby also watches the Lease, so it notes each renewal when it is written rather than at
// its next poll (up to a retry period later), and it polls again exactly when the lease it saw
// would expire: a holder killed without releasing is replaced one lease duration after its last
// renewal (13-15 s with the defaults) instead of up to a lease plus two retry periods later
// (18 s). Where the watch is not allowed (RBAC without list/watch on leases) it only polls.
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Platform.Operator.Runtime;

public sealed record LeaseSettings(string Namespace, string Name, string Identity, TimeSpan LeaseDuration, TimeSpan RenewDeadline, TimeSpan RetryPeriod);

public sealed partial class LeaseElector
{
    private readonly IKubernetes _client;
    private readonly LeaseSettings _settings;
    private readonly TimeProvider _time;
    private readonly InformerTimings _watchTimings;
    private readonly ILogger<LeaseElector> _logger;
    // The last record seen (by a read, a write or the watch) and when this replica first saw it.
    private readonly Lock _observedLock = new();
    private string? _observedHolder;
    private DateTime? _observedRenew;
    private TimeSpan _observedDuration;
    private DateTimeOffset _observedAt;
    private volatile bool _isLeader;

    public LeaseElector(IKubernetes client, LeaseSettings settings, InformerTimings watchTimings, TimeProvider time, ILogger<LeaseElector> logger)
    {
        _client = client;
        _settings = settings;
        _watchTimings = watchTimings;
        _time = time;
        _logger = logger;
    }

    public bool IsLeader => _isLeader;

    public string Identity => _settings.Identity;

    /// <summary>Campaigns until cancelled; while leader runs <paramref name="lead"/> with a token
    /// cancelled when leadership is lost. Loops back to campaigning after a loss.</summary>
    public async Task RunAsync(Func<CancellationToken, Task> lead, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await AcquireAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            _isLeader = true;
            LogStartedLeading(_logger, _settings.Identity);
            using var leading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var work = RunLeaderWorkAsync(lead, leading.Token);
            var renew = RenewLoopAsync(leading.Token);
            await Task.WhenAny(work, renew).ConfigureAwait(false);
            await leading.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(work, renew).ConfigureAwait(false);
            _isLeader = false;
            LogStoppedLeading(_logger, _settings.Identity);
            if (cancellationToken.IsCancellationRequested)
            {
                await ReleaseAsync().ConfigureAwait(false);
            }
        }
    }

    private async Task RunLeaderWorkAsync(Func<CancellationToken, Task> lead, CancellationToken cancellationToken)
    {
        try
        {
            await lead(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Leadership ended: the work stops with it.
            LogLeaderWorkStopped(_logger, _settings.Identity);
        }
        catch (Exception ex)
        {
            // A crashed controller must not keep the lease: stepping down lets a healthy replica lead.
            LogLeaderWorkFailed(_logger, ex);
        }
    }

    private async Task AcquireAsync(CancellationToken cancellationToken)
    {
        using var standingBy = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var watch = WatchLeaseAsync(standingBy.Token);
        try
        {
            while (true)
            {
                if (await TryAcquireOrRenewAsync(cancellationToken).ConfigureAwait(false))
                {
                    return;
                }

                await Task.Delay(NextAttemptDelay(), _time, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            await standingBy.CancelAsync().ConfigureAwait(false);
            await watch.ConfigureAwait(false);
        }
    }

    /// <summary>Notes every change of the Lease record while standing by (a list, then a watch).</summary>
    private async Task WatchLeaseAsync(CancellationToken cancellationToken)
    {
        var byName = "metadata.name=" + _settings.Name;
        try
        {
            // One probe first: without list/watch rights on leases the standby keeps to polling.
            using var probe = await _client.CoordinationV1.ListNamespacedLeaseWithHttpMessagesAsync(_settings.Namespace, fieldSelector: byName, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized)
        {
            LogLeaseWatchForbidden(_logger, _settings.Namespace, _settings.Name);
            return;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return;
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            // The informer below retries on its own.
            LogLeaseError(_logger, ex);
        }

        var informer = new Informer<V1Lease, V1LeaseList>(
            "lease " + _settings.Name,
            (r, ct) => _client.CoordinationV1.ListNamespacedLeaseWithHttpMessagesAsync(
                _settings.Namespace, allowWatchBookmarks: r.Watch, fieldSelector: byName, resourceVersion: r.ResourceVersion, timeoutSeconds: r.TimeoutSeconds, watch: r.Watch, cancellationToken: ct),
            (type, lease) =>
            {
                if (type != WatchEventType.Deleted)
                {
                    Note(lease.Spec, _time.GetUtcNow());
                }
            },
            _watchTimings, _time, _logger);
        await informer.RunAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A retry period, or less when the lease another holder has would expire sooner.</summary>
    private TimeSpan NextAttemptDelay()
    {
        lock (_observedLock)
        {
            if (string.IsNullOrEmpty(_observedHolder) || _observedHolder == _settings.Identity)
            {
                return _settings.RetryPeriod;
            }

            var untilExpiry = _observedAt + _observedDuration - _time.GetUtcNow();
            return untilExpiry > TimeSpan.Zero && untilExpiry < _settings.RetryPeriod ? untilExpiry : _settings.RetryPeriod;
        }
    }

    private async Task RenewLoopAsync(CancellationToken cancellationToken)
    {
        var lastRenew = _time.GetUtcNow();
        try
        {
            while (true)
            {
                await Task.Delay(_settings.RetryPeriod, _time, cancellationToken).ConfigureAwait(false);
                if (await TryAcquireOrRenewAsync(cancellationToken).ConfigureAwait(false))
                {
                    lastRenew = _time.GetUtcNow();
                }
                else if (_time.GetUtcNow() - lastRenew >= _settings.RenewDeadline || (_observedHolder is not null && _observedHolder != _settings.Identity))
                {
                    LogLostLease(_logger, _settings.Identity, _observedHolder ?? "");
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped by the caller: leadership ends without a renew failure.
            return;
        }
    }

    private async Task<bool> TryAcquireOrRenewAsync(CancellationToken cancellationToken)
    {
        V1Lease lease;
        try
        {
            lease = await _client.CoordinationV1.ReadNamespacedLeaseAsync(_settings.Name, _settings.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return await TryCreateAsync(_time.GetUtcNow(), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            LogLeaseError(_logger, ex);
            return false;
        }

        // Read after the response: a record is never taken as seen before it was written.
        var now = _time.GetUtcNow();
        var spec = lease.Spec ??= new V1LeaseSpec();
        var seenAt = Note(spec, now);
        var heldByOther = !string.IsNullOrEmpty(spec.HolderIdentity) && spec.HolderIdentity != _settings.Identity;
        if (heldByOther && seenAt + LeaseDurationOf(spec) > now)
        {
            return false;
        }

        if (spec.HolderIdentity != _settings.Identity)
        {
            spec.AcquireTime = now.UtcDateTime;
            spec.LeaseTransitions = (spec.LeaseTransitions ?? 0) + 1;
        }

        spec.HolderIdentity = _settings.Identity;
        spec.RenewTime = now.UtcDateTime;
        spec.LeaseDurationSeconds = LeaseSeconds;
        try
        {
            var updated = await _client.CoordinationV1.ReplaceNamespacedLeaseAsync(lease, _settings.Name, _settings.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
            Observe(updated, now);
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            // Someone else wrote the lease first; re-read on the next try.
            return false;
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            LogLeaseError(_logger, ex);
            return false;
        }
    }

    private async Task<bool> TryCreateAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var lease = new V1Lease
        {
            ApiVersion = "coordination.k8s.io/v1",
            Kind = "Lease",
            Metadata = new V1ObjectMeta { Name = _settings.Name, NamespaceProperty = _settings.Namespace },
            Spec = new V1LeaseSpec
            {
                HolderIdentity = _settings.Identity,
                AcquireTime = now.UtcDateTime,
                RenewTime = now.UtcDateTime,
                LeaseDurationSeconds = LeaseSeconds,
                LeaseTransitions = 0,
            },
        };
        try
        {
            var created = await _client.CoordinationV1.CreateNamespacedLeaseAsync(lease, _settings.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
            Observe(created, now);
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            return false;
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            LogLeaseError(_logger, ex);
            return false;
        }
    }

    /// <summary>Gives the lease up on a clean stop so a standby need not wait for it to expire.</summary>
    private async Task ReleaseAsync()
    {
        using var timeout = new CancellationTokenSource(_settings.RenewDeadline);
        try
        {
            var lease = await _client.CoordinationV1.ReadNamespacedLeaseAsync(_settings.Name, _settings.Namespace, cancellationToken: timeout.Token).ConfigureAwait(false);
            if (lease.Spec?.HolderIdentity != _settings.Identity)
            {
                return;
            }

            lease.Spec.HolderIdentity = null;
            lease.Spec.LeaseDurationSeconds = 1;
            lease.Spec.RenewTime = _time.GetUtcNow().UtcDateTime;
            await _client.CoordinationV1.ReplaceNamespacedLeaseAsync(lease, _settings.Name, _settings.Namespace, cancellationToken: timeout.Token).ConfigureAwait(false);
            LogReleased(_logger, _settings.Identity);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException or OperationCanceledException)
        {
            // The lease then simply expires after its duration.
            LogLeaseError(_logger, ex);
        }
    }

    private int LeaseSeconds => Math.Max(1, (int)Math.Ceiling(_settings.LeaseDuration.TotalSeconds));

    private TimeSpan LeaseDurationOf(V1LeaseSpec? spec) =>
        spec?.LeaseDurationSeconds is > 0 ? TimeSpan.FromSeconds(spec.LeaseDurationSeconds.Value) : _settings.LeaseDuration;

    /// <summary>Records a record seen at <paramref name="now"/> unless it is the one already seen;
    /// returns when this replica first saw the record it now holds.</summary>
    private DateTimeOffset Note(V1LeaseSpec? spec, DateTimeOffset now)
    {
        lock (_observedLock)
        {
            if (spec?.HolderIdentity != _observedHolder || spec?.RenewTime != _observedRenew)
            {
                _observedHolder = spec?.HolderIdentity;
                _observedRenew = spec?.RenewTime;
                _observedDuration = LeaseDurationOf(spec);
                _observedAt = now;
            }

            return _observedAt;
        }
    }

    private void Observe(V1Lease lease, DateTimeOffset now)
    {
        lock (_observedLock)
        {
            _observedHolder = lease.Spec?.HolderIdentity;
            _observedRenew = lease.Spec?.RenewTime;
            _observedDuration = LeaseDurationOf(lease.Spec);
            _observedAt = now;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Identity} became the leader")]
    private static partial void LogStartedLeading(ILogger logger, string identity);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Identity} stopped leading")]
    private static partial void LogStoppedLeading(ILogger logger, string identity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Identity} lost the lease (holder now '{Holder}')")]
    private static partial void LogLostLease(ILogger logger, string identity, string holder);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Identity} released the lease")]
    private static partial void LogReleased(ILogger logger, string identity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "No list/watch rights on Lease {Namespace}/{Name}: a standby only polls it (a killed leader is then replaced up to a retry period later)")]
    private static partial void LogLeaseWatchForbidden(ILogger logger, string @namespace, string name);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Lease read or write failed")]
    private static partial void LogLeaseError(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Identity}: controller stopped with the end of leadership")]
    private static partial void LogLeaderWorkStopped(ILogger logger, string identity);

    [LoggerMessage(Level = LogLevel.Error, Message = "The controller failed while leading; stepping down")]
    private static partial void LogLeaderWorkFailed(ILogger logger, Exception exception);
}
