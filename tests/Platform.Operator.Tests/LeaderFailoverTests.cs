// Criterion 6 of RELIABILITY.md ("operator leader killed: a new leader within 17 s; replicas
// never exceed the desired count; injected 409 conflicts converge"), with real processes and the
// shipped lease timings (15 s lease, 10 s renew deadline, 2 s retry; nothing overridden).
// Two operator processes share the Lease; the test kubelet turns the worker StatefulSet into pods.
// The model is scaled from 3 to 2 and, once that has taken effect, the leader process is
// SIGKILLed (so it cannot release its lease) just after one of its renewals, the moment that
// leaves the whole lease to run out. Right after the kill the model is scaled to 1 (a
// change only the next leader can make) and 409s are injected on the model's writes.
// Checks: the standby holds the lease within 17 s of the kill, and no earlier than a full lease
// after the dead holder's last renewal; it has applied the post-kill change within 17 s of the
// kill; the model's status converges (observedGeneration and conditions of the current
// generation) through the 409s; and, over the whole test, the StatefulSet's replicas and its
// live pods never exceeded the desired count, nor the new count once a scale-down had taken
// effect. The measured times are written to the test output.
using System.Diagnostics;
using k8s;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;
using Platform.Testing.Kubernetes.Kubelet;
using Xunit.Abstractions;

namespace Platform.Operator.Tests;

public sealed class LeaderFailoverTests(ITestOutputHelper output)
{
    private const string Model = "steady";

    /// <summary>Operator:LeaseName's default: the processes run with the shipped settings.</summary>
    private const string LeaseName = "platform-operator";

    private static readonly TimeSpan NewLeaderWithin = TimeSpan.FromSeconds(17);
    private static readonly TimeSpan ShippedLeaseDuration = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [FakeOnlyFact]
    public async Task A_SIGKILLed_leader_process_is_replaced_within_17_s_and_workers_never_exceed_the_desired_count()
    {
        await using var cluster = await TestCluster.StartAsync(tls: true);
        var client = cluster.Client;
        var ns = cluster.Namespace;
        var kubeletState = Path.Combine("/var/tmp", "platform-failover-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // No image runs here: the pods stay Pending (ErrImagePull), which is all the count needs.
            await using var kubelet = TestKubelet.Start(cluster.RequireFake, new TestKubeletOptions { Namespace = ns, StateDirectory = kubeletState, Entrypoint = _ => null });
            await using var recorder = await ReplicaRecorder.StartAsync(cluster.NewClient(), ns, Model);

            await using var leader = OperatorProcess.Start(cluster, "operator-killed");
            await leader.WaitReadyAsync(Patience);
            var firstRecord = (await Waiter.LeaseAsync(client, ns, LeaseName, l => l?.Spec.HolderIdentity == leader.Identity, Patience))!;
            await Models.CreateAsync(client, Models.New(Model, ns, replicas: 3));
            await recorder.WaitAsync(s => s is { StatefulSetReplicas: 3, LivePods: 3 }, Patience, "3 workers");

            await using var standby = OperatorProcess.Start(cluster, "operator-standby");
            await standby.WaitReadyAsync(Patience);

            // Scale down just before the kill; the leader about to die applies it.
            await Models.UpdateSpecAsync(client, ns, Model, s => s.Replicas = 2);
            var twoApplied = await recorder.WaitAsync(s => s.StatefulSetReplicas == 2, Patience, "spec.replicas 2");
            var twoRunning = await recorder.WaitAsync(s => s is { StatefulSetReplicas: 2, LivePods: 2 }, Patience, "2 workers");

            // The standby has been up for at least one renewal of the lease it will take, and the
            // kill follows a renewal at once.
            var renewed = (await client.CoordinationV1.ReadNamespacedLeaseAsync(LeaseName, ns)).Spec.RenewTime;
            await Waiter.LeaseAsync(client, ns, LeaseName, l => l?.Spec.RenewTime != renewed, Patience);

            var killedAt = recorder.Now;
            var sinceKill = Stopwatch.StartNew();
            await leader.KillAsync();
            await Models.UpdateSpecAsync(client, ns, Model, s => s.Replicas = 1);
            cluster.RequireFake.InjectConflicts(LongContextModel.Group, LongContextModel.Plural, 3);

            V1Lease? lastOfDead = null;
            var taken = (await Waiter.LeaseAsync(client, ns, LeaseName, l =>
            {
                if (l?.Spec.HolderIdentity == leader.Identity)
                {
                    lastOfDead = l;
                }

                return l?.Spec.HolderIdentity == standby.Identity;
            }, Patience))!;
            var takeover = sinceKill.Elapsed;
            var oneApplied = await recorder.WaitAsync(s => s.StatefulSetReplicas == 1, Patience, "spec.replicas 1 from the new leader");
            var reconciled = oneApplied.At - killedAt;
            var converged = (await Waiter.ModelAsync(client, ns, Model, m => m?.Status?.ObservedGeneration == 3 && Models.HasCondition(m, ConditionTypes.Degraded, "False", generation: 3), Patience))!;
            var oneRunning = await recorder.WaitAsync(s => s is { StatefulSetReplicas: 1, LivePods: 1 }, Patience, "1 worker");
            // A retry period more, so a leader that put back an older count would be seen.
            await Task.Delay(TimeSpan.FromSeconds(2));

            var gapAfterLastRenewal = taken.Spec.AcquireTime!.Value - lastOfDead!.Spec.RenewTime!.Value;
            output.WriteLine($"SIGKILL -> standby holds the lease: {takeover.TotalSeconds:F2} s; -> it applied the post-kill scale to 1: {reconciled.TotalSeconds:F2} s");
            output.WriteLine($"dead holder's last renewal -> takeover: {gapAfterLastRenewal.TotalSeconds:F2} s (lease {ShippedLeaseDuration.TotalSeconds} s)");
            output.WriteLine($"worker states: {recorder.Describe()}");

            Assert.True(takeover <= NewLeaderWithin, $"the standby took the lease {takeover.TotalSeconds:F2} s after the kill\n{standby.Log}");
            Assert.True(reconciled <= NewLeaderWithin, $"the new leader applied spec.replicas=1 {reconciled.TotalSeconds:F2} s after the kill\n{standby.Log}");
            Assert.True(gapAfterLastRenewal >= ShippedLeaseDuration, $"the standby took a lease renewed only {gapAfterLastRenewal.TotalSeconds:F2} s before");
            Assert.Equal(firstRecord.Spec.LeaseTransitions + 1, taken.Spec.LeaseTransitions);
            Assert.True(leader.HasExited);

            Assert.Equal(0, cluster.RequireFake.PendingConflicts(LongContextModel.Group, LongContextModel.Plural));
            Assert.True(Models.HasCondition(converged, ConditionTypes.Progressing, "True", generation: 3), "Progressing: the pods never become ready here");
            Assert.True(Models.HasCondition(converged, ConditionTypes.Ready, "False", generation: 3), "Ready: the pods never become ready here");
            Assert.Equal(Names.WorkerSelector(Model), converged.Status!.Selector);

            var states = recorder.Describe();
            Assert.True(recorder.MaxFrom(TimeSpan.Zero).StatefulSetReplicas <= 3, "more than 3 replicas: " + states);
            Assert.True(recorder.MaxFrom(TimeSpan.Zero).LivePods <= 3, "more than 3 pods: " + states);
            Assert.True(recorder.MaxFrom(twoApplied.At).StatefulSetReplicas <= 2, "above 2 replicas after the scale to 2 took effect: " + states);
            Assert.True(recorder.MaxFrom(twoRunning.At).LivePods <= 2, "above 2 pods after the scale to 2 took effect: " + states);
            Assert.True(recorder.MaxFrom(oneApplied.At).StatefulSetReplicas <= 1, "above 1 replica after the scale to 1 took effect: " + states);
            Assert.True(recorder.MaxFrom(oneRunning.At).LivePods <= 1, "above 1 pod after the scale to 1 took effect: " + states);
        }
        finally
        {
            if (Directory.Exists(kubeletState))
            {
                Directory.Delete(kubeletState, recursive: true);
            }
        }
    }
}
