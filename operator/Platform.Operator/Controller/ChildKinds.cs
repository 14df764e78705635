// The kinds of object the operator owns for a model, as a table the reconciler
// walks in order: for each, which desired object it is (from the pure builders),
// how to read, create and replace it through the API, and what of the live
// object a replace must keep (a Service's allocated clusterIP). Adding a kind is
// one row here and one builder (Builders/ChildObjects.<Kind>.cs), not another
// copy of the create-or-replace logic.
using k8s;
using k8s.Models;
using Platform.Operator.Builders;

namespace Platform.Operator.Controller;

/// <summary>One kind of owned child, with its API calls typed away so the reconciler can loop over kinds.</summary>
public abstract class ChildKind
{
    protected ChildKind(string kind) => Kind = kind;

    /// <summary>The Kubernetes kind, for logs, metrics and errors.</summary>
    public string Kind { get; }
    public abstract IKubernetesObject<V1ObjectMeta> Desired(DesiredChildren children);
    public abstract Task<IKubernetesObject<V1ObjectMeta>> ReadAsync(IKubernetes client, string name, string ns, CancellationToken cancellationToken);
    public abstract Task<IKubernetesObject<V1ObjectMeta>> CreateAsync(IKubernetes client, IKubernetesObject<V1ObjectMeta> desired, string ns, CancellationToken cancellationToken);
    public abstract Task<IKubernetesObject<V1ObjectMeta>> ReplaceAsync(IKubernetes client, IKubernetesObject<V1ObjectMeta> desired, string name, string ns, CancellationToken cancellationToken);
    /// <summary>Copies into <paramref name="desired"/> what the live object must keep across a replace.</summary>
    public abstract void Preserve(IKubernetesObject<V1ObjectMeta> existing, IKubernetesObject<V1ObjectMeta> desired);
}

public sealed class ChildKind<T>(
    string kind,
    Func<DesiredChildren, T> desired,
    Func<IKubernetes, string, string, CancellationToken, Task<T>> read,
    Func<IKubernetes, T, string, CancellationToken, Task<T>> create,
    Func<IKubernetes, T, string, string, CancellationToken, Task<T>> replace,
    Action<T, T>? preserve = null) : ChildKind(kind)
    where T : IKubernetesObject<V1ObjectMeta>
{
    public override IKubernetesObject<V1ObjectMeta> Desired(DesiredChildren children) => desired(children);

    public override async Task<IKubernetesObject<V1ObjectMeta>> ReadAsync(IKubernetes client, string name, string ns, CancellationToken cancellationToken) =>
        await read(client, name, ns, cancellationToken).ConfigureAwait(false);

    public override async Task<IKubernetesObject<V1ObjectMeta>> CreateAsync(IKubernetes client, IKubernetesObject<V1ObjectMeta> desired, string ns, CancellationToken cancellationToken) =>
        await create(client, (T)desired, ns, cancellationToken).ConfigureAwait(false);

    public override async Task<IKubernetesObject<V1ObjectMeta>> ReplaceAsync(IKubernetes client, IKubernetesObject<V1ObjectMeta> desired, string name, string ns, CancellationToken cancellationToken) =>
        await replace(client, (T)desired, name, ns, cancellationToken).ConfigureAwait(false);

    public override void Preserve(IKubernetesObject<V1ObjectMeta> existing, IKubernetesObject<V1ObjectMeta> desired) => preserve?.Invoke((T)existing, (T)desired);
}

public static class ChildKinds
{
    public static readonly ChildKind<V1StatefulSet> Workers = new("StatefulSet", d => d.Workers,
        (c, n, s, ct) => c.AppsV1.ReadNamespacedStatefulSetAsync(n, s, cancellationToken: ct),
        (c, o, s, ct) => c.AppsV1.CreateNamespacedStatefulSetAsync(o, s, cancellationToken: ct),
        (c, o, n, s, ct) => c.AppsV1.ReplaceNamespacedStatefulSetAsync(o, n, s, cancellationToken: ct));

    public static readonly ChildKind<V1Deployment> Router = new("Deployment", d => d.Router,
        (c, n, s, ct) => c.AppsV1.ReadNamespacedDeploymentAsync(n, s, cancellationToken: ct),
        (c, o, s, ct) => c.AppsV1.CreateNamespacedDeploymentAsync(o, s, cancellationToken: ct),
        (c, o, n, s, ct) => c.AppsV1.ReplaceNamespacedDeploymentAsync(o, n, s, cancellationToken: ct));

    /// <summary>Every kind, in the order they are made to match: configuration and identities before the pods that use them.</summary>
    public static readonly IReadOnlyList<ChildKind> All =
    [
        new ChildKind<V1ConfigMap>("ConfigMap", d => d.ConfigMap,
            (c, n, s, ct) => c.CoreV1.ReadNamespacedConfigMapAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.CoreV1.CreateNamespacedConfigMapAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.CoreV1.ReplaceNamespacedConfigMapAsync(o, n, s, cancellationToken: ct)),
        Service(d => d.WorkerService),
        Workers,
        new ChildKind<V1ServiceAccount>("ServiceAccount", d => d.RouterAccount,
            (c, n, s, ct) => c.CoreV1.ReadNamespacedServiceAccountAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.CoreV1.CreateNamespacedServiceAccountAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.CoreV1.ReplaceNamespacedServiceAccountAsync(o, n, s, cancellationToken: ct)),
        new ChildKind<V1Role>("Role", d => d.RouterRole,
            (c, n, s, ct) => c.RbacAuthorizationV1.ReadNamespacedRoleAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.RbacAuthorizationV1.CreateNamespacedRoleAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.RbacAuthorizationV1.ReplaceNamespacedRoleAsync(o, n, s, cancellationToken: ct)),
        new ChildKind<V1RoleBinding>("RoleBinding", d => d.RouterRoleBinding,
            (c, n, s, ct) => c.RbacAuthorizationV1.ReadNamespacedRoleBindingAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.RbacAuthorizationV1.CreateNamespacedRoleBindingAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.RbacAuthorizationV1.ReplaceNamespacedRoleBindingAsync(o, n, s, cancellationToken: ct)),
        Router,
        Service(d => d.RouterService),
        new ChildKind<V1PodDisruptionBudget>("PodDisruptionBudget", d => d.DisruptionBudget,
            (c, n, s, ct) => c.PolicyV1.ReadNamespacedPodDisruptionBudgetAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.PolicyV1.CreateNamespacedPodDisruptionBudgetAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.PolicyV1.ReplaceNamespacedPodDisruptionBudgetAsync(o, n, s, cancellationToken: ct)),
        new ChildKind<V1NetworkPolicy>("NetworkPolicy", d => d.NetworkPolicy,
            (c, n, s, ct) => c.NetworkingV1.ReadNamespacedNetworkPolicyAsync(n, s, cancellationToken: ct),
            (c, o, s, ct) => c.NetworkingV1.CreateNamespacedNetworkPolicyAsync(o, s, cancellationToken: ct),
            (c, o, n, s, ct) => c.NetworkingV1.ReplaceNamespacedNetworkPolicyAsync(o, n, s, cancellationToken: ct)),
    ];

    private static ChildKind<V1Service> Service(Func<DesiredChildren, V1Service> select) => new("Service", select,
        (c, n, s, ct) => c.CoreV1.ReadNamespacedServiceAsync(n, s, cancellationToken: ct),
        (c, o, s, ct) => c.CoreV1.CreateNamespacedServiceAsync(o, s, cancellationToken: ct),
        (c, o, n, s, ct) => c.CoreV1.ReplaceNamespacedServiceAsync(o, n, s, cancellationToken: ct),
        PreserveClusterIp);

    private static void PreserveClusterIp(V1Service existing, V1Service desired)
    {
        // clusterIP is immutable once allocated; a replace without it would be refused.
        if (existing.Spec?.ClusterIP is { Length: > 0 } ip && desired.Spec.ClusterIP is null)
        {
            desired.Spec.ClusterIP = ip;
            desired.Spec.ClusterIPs = existing.Spec.ClusterIPs;
        }
    }
}
