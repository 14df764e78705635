// Two operator replicas share one Lease: only the holder reconciles; stopping it hands the
// lease over at once (it releases on a clean stop); a holder that dies without releasing is
// replaced once its lease has expired. Timings are the tests' short ones (1 s lease).
using System.Diagnostics;
using k8s;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class LeaderElectionTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;

    private IKubernetes Client => _cluster.Client;

    private string Ns => _cluster.Namespace;

    public async Task InitializeAsync() => _cluster = await TestCluster.StartAsync();

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task Only_the_leader_acts_and_a_new_leader_takes_over_when_it_stops()
    {
        await using var a = await OperatorInstance.StartAsync(_cluster, "operator-a");
        var leader = await WaitForHolderAsync(h => h == "operator-a");
        await using var b = await OperatorInstance.StartAsync(_cluster, "operator-b");

        await Models.CreateAsync(Client, Models.New("led", Ns));
        await Waiter.StatefulSetAsync(Client, Ns, "led-worker", s => s is not null);
        await Waiter.ModelAsync(Client, Ns, "led", m => m?.Status?.ObservedGeneration == 1);
        Assert.True(a.Service.IsLeader);
        Assert.False(b.Service.IsLeader);
        Assert.True(a.Metrics.ReconcileCount > 0);
        Assert.Equal(0, b.Metrics.ReconcileCount);
        Assert.Equal("operator-a", leader.Spec.HolderIdentity);

        var stopped = Stopwatch.StartNew();
        await a.DisposeAsync();
        var next = await WaitForHolderAsync(h => h == "operator-b");
        Assert.True(stopped.Elapsed < TimeSpan.FromSeconds(5), $"failover took {stopped.Elapsed}");
        Assert.True(next.Spec.LeaseTransitions >= 1);

        // The new leader reconciles: a spec change made after the failover rolls out.
        await Models.UpdateSpecAsync(Client, Ns, "led", s => s.Replicas = 3);
        await Waiter.StatefulSetAsync(Client, Ns, "led-worker", s => s!.Spec.Replicas == 3);
        Assert.True(b.Service.IsLeader);
        Assert.True(b.Metrics.ReconcileCount > 0);
    }

    [Fact]
    public async Task A_lease_left_by_a_dead_holder_is_taken_once_it_expires()
    {
        var now = DateTime.UtcNow;
        await Client.CoordinationV1.CreateNamespacedLeaseAsync(new V1Lease
        {
            Metadata = new V1ObjectMeta { Name = "platform-operator-test", NamespaceProperty = Ns },
            Spec = new V1LeaseSpec { HolderIdentity = "crashed-replica", LeaseDurationSeconds = 1, AcquireTime = now, RenewTime = now, LeaseTransitions = 4 },
        }, Ns);

        var started = Stopwatch.StartNew();
        await using var survivor = await OperatorInstance.StartAsync(_cluster, "survivor");
        var lease = await WaitForHolderAsync(h => h == "survivor");
        Assert.True(started.Elapsed >= TimeSpan.FromSeconds(0.9), $"took over an unexpired lease after {started.Elapsed}");
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(5), $"takeover took {started.Elapsed}");
        Assert.Equal(5, lease.Spec.LeaseTransitions);

        await Models.CreateAsync(Client, Models.New("after-crash", Ns));
        await Waiter.StatefulSetAsync(Client, Ns, "after-crash-worker", s => s is not null);
    }

    private async Task<V1Lease> WaitForHolderAsync(Func<string?, bool> holder) =>
        (await Waiter.LeaseAsync(Client, Ns, "platform-operator-test", l => l is not null && holder(l.Spec.HolderIdentity), TimeSpan.FromSeconds(10)))!;
}
