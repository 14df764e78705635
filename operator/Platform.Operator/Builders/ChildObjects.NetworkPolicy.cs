// The workers' NetworkPolicy: ingress from this model's router and peers (and, optionally,
// a monitoring namespace to the metrics port) only.
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    /// <summary>
    /// Ingress to the workers: this model's router and peer workers on both ports; with <paramref name="monitoring"/>,
    /// also any pod of that namespace on the HTTP port only (/metrics; the same port serves the probes), so
    /// Prometheus can scrape without reaching the gRPC API.
    /// </summary>
    public static V1NetworkPolicy BuildNetworkPolicy(LongContextModel model, MonitoringAccess? monitoring = null)
    {
        var name = model.Metadata.Name;
        var ingress = new List<V1NetworkPolicyIngressRule>
        {
            new()
            {
                // Only this model's router and its peer workers reach the worker ports.
                FromProperty =
                [
                    new V1NetworkPolicyPeer { PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.RouterComponent) } },
                    new V1NetworkPolicyPeer { PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) } },
                ],
                Ports =
                [
                    new V1NetworkPolicyPort { Port = Names.WorkerGrpcPort, Protocol = "TCP" },
                    new V1NetworkPolicyPort { Port = Names.HttpPort, Protocol = "TCP" },
                ],
            },
        };
        if (monitoring is not null)
        {
            ingress.Add(new V1NetworkPolicyIngressRule
            {
                // Kubernetes labels every namespace with its own name (kubernetes.io/metadata.name, since 1.21).
                FromProperty =
                [
                    new V1NetworkPolicyPeer { NamespaceSelector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { [Names.NamespaceNameLabel] = monitoring.Namespace } } },
                ],
                Ports = [new V1NetworkPolicyPort { Port = Names.HttpPort, Protocol = "TCP" }],
            });
        }

        return new V1NetworkPolicy
        {
            ApiVersion = "networking.k8s.io/v1",
            Kind = "NetworkPolicy",
            Metadata = Meta(model, Names.WorkerNetworkPolicy(name), Names.WorkerComponent),
            Spec = new V1NetworkPolicySpec
            {
                PodSelector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) },
                PolicyTypes = ["Ingress"],
                Ingress = ingress,
            },
        };
    }
}
