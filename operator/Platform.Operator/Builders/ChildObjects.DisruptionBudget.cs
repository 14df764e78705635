// The workers' PodDisruptionBudget: voluntary evictions take one worker at a time.
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1PodDisruptionBudget BuildDisruptionBudget(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1PodDisruptionBudget
        {
            ApiVersion = "policy/v1",
            Kind = "PodDisruptionBudget",
            Metadata = Meta(model, Names.WorkerDisruptionBudget(name), Names.WorkerComponent),
            Spec = new V1PodDisruptionBudgetSpec
            {
                // One worker at a time: each holds KV (and DistAttention loans) that is costly to rebuild.
                MaxUnavailable = 1,
                Selector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.WorkerComponent) },
            },
        };
    }
}
