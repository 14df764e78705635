// The workers' headless Service: stable DNS names for the StatefulSet's pods (DistAttention
// peers) and the EndpointSlices the router discovers its workers from.
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1Service BuildWorkerService(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = Meta(model, Names.WorkerHeadlessService(name), Names.WorkerComponent),
            Spec = new V1ServiceSpec
            {
                ClusterIP = "None",
                // Peers must resolve each other while still loading the model.
                PublishNotReadyAddresses = true,
                Selector = Names.SelectorLabels(name, Names.WorkerComponent),
                Ports =
                [
                    new V1ServicePort { Name = Names.WorkerGrpcPortName, Port = Names.WorkerGrpcPort, TargetPort = Names.WorkerGrpcPort, Protocol = "TCP" },
                    new V1ServicePort { Name = "http", Port = Names.HttpPort, TargetPort = Names.HttpPort, Protocol = "TCP" },
                ],
            },
        };
    }
}
