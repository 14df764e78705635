// Waits for an object to reach a state by list-then-watch through the Kubernetes client (no
// polling): the predicate sees each listed object (null when the list is empty) and then the
// object of every watch event (null for a deletion); the wait fails with the last seen state
// after the timeout.
using k8s;
using k8s.Autorest;
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Tests.Infrastructure;

public static class Waiter
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);

    public static Task<LongContextModel?> ModelAsync(IKubernetes client, string ns, string name, Func<LongContextModel?, bool> predicate, TimeSpan? timeout = null) =>
        UntilAsync<LongContextModel, LongContextModelList>(
            (rv, watch, ct) => client.CustomObjects.ListNamespacedCustomObjectWithHttpMessagesAsync<LongContextModelList>(
                LongContextModel.Group, LongContextModel.Version, ns, LongContextModel.Plural, fieldSelector: "metadata.name=" + name, resourceVersion: rv, watch: watch, cancellationToken: ct),
            predicate, timeout ?? DefaultTimeout, $"LongContextModel {ns}/{name}");

    public static Task<V1StatefulSet?> StatefulSetAsync(IKubernetes client, string ns, string name, Func<V1StatefulSet?, bool> predicate, TimeSpan? timeout = null) =>
        UntilAsync<V1StatefulSet, V1StatefulSetList>(
            (rv, watch, ct) => client.AppsV1.ListNamespacedStatefulSetWithHttpMessagesAsync(ns, fieldSelector: "metadata.name=" + name, resourceVersion: rv, watch: watch, cancellationToken: ct),
            predicate, timeout ?? DefaultTimeout, $"StatefulSet {ns}/{name}");

    public static Task<V1Deployment?> DeploymentAsync(IKubernetes client, string ns, string name, Func<V1Deployment?, bool> predicate, TimeSpan? timeout = null) =>
        UntilAsync<V1Deployment, V1DeploymentList>(
            (rv, watch, ct) => client.AppsV1.ListNamespacedDeploymentWithHttpMessagesAsync(ns, fieldSelector: "metadata.name=" + name, resourceVersion: rv, watch: watch, cancellationToken: ct),
            predicate, timeout ?? DefaultTimeout, $"Deployment {ns}/{name}");

    public static Task<V1Lease?> LeaseAsync(IKubernetes client, string ns, string name, Func<V1Lease?, bool> predicate, TimeSpan? timeout = null) =>
        UntilAsync<V1Lease, V1LeaseList>(
            (rv, watch, ct) => client.CoordinationV1.ListNamespacedLeaseWithHttpMessagesAsync(ns, fieldSelector: "metadata.name=" + name, resourceVersion: rv, watch: watch, cancellationToken: ct),
            predicate, timeout ?? DefaultTimeout, $"Lease {ns}/{name}");

    public static async Task<T?> UntilAsync<T, TList>(
        Func<string?, bool, CancellationToken, Task<HttpOperationResponse<TList>>> list,
        Func<T?, bool> predicate,
        TimeSpan timeout,
        string what)
        where T : class, IKubernetesObject<V1ObjectMeta>
        where TList : IItems<T>, IMetadata<V1ListMeta>
    {
        using var cts = new CancellationTokenSource(timeout);
        T? last = null;
        try
        {
            while (true)
            {
                using var listed = await list(null, false, cts.Token);
                var match = listed.Body.Items.FirstOrDefault(i => predicate(i));
                if (match is not null)
                {
                    return match;
                }

                last = listed.Body.Items.FirstOrDefault();
                if (last is null && predicate(null))
                {
                    return null;
                }

#pragma warning disable CS0618 // the typed watch extension is the one that works for custom resources
                var events = list(listed.Body.Metadata.ResourceVersion, true, cts.Token).WatchAsync<T, TList>(cancellationToken: cts.Token);
#pragma warning restore CS0618
                await foreach (var (type, item) in events)
                {
                    if (type == WatchEventType.Bookmark)
                    {
                        continue;
                    }

                    last = type == WatchEventType.Deleted ? null : item;
                    if (predicate(last))
                    {
                        return last;
                    }
                }

                // The watch ended (server timeout or dropped): list again and keep waiting.
            }
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            Assert.Fail($"timed out after {timeout.TotalSeconds}s waiting for {what}; last seen: {(last is null ? "absent" : KubernetesJson.Serialize(last))}");
            throw;
        }
    }
}
