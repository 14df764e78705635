// The router's Service: the model's OpenAI-compatible endpoint inside the cluster.
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1Service BuildRouterService(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = Meta(model, Names.RouterService(name), Names.RouterComponent),
            Spec = new V1ServiceSpec
            {
                Type = "ClusterIP",
                Selector = Names.SelectorLabels(name, Names.RouterComponent),
                Ports = [new V1ServicePort { Name = "http", Port = Names.RouterServicePort, TargetPort = Names.HttpPort, Protocol = "TCP" }],
            },
        };
    }
}
