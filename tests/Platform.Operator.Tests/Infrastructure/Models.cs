// Builders of LongContextModel objects for tests, and helpers that play the kubelet and the
// workload controllers on the fake (marking a StatefulSet's and Deployment's pods ready).
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;

namespace Platform.Operator.Tests.Infrastructure;

public static class Models
{
    public static LongContextModel New(string name, string ns, int replicas = 2) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
        Spec = new LongContextModelSpec
        {
            Model = new ModelSpec { Source = "pvc://models/qwen2.5-7b-1m", ServedName = name, MaxContextTokens = 1_048_576 },
            Replicas = replicas,
            Worker = new WorkerSpec { Resources = new WorkerResources { Gpus = 1, Memory = "80Gi" } },
        },
    };

    public static Task<LongContextModel> CreateAsync(IKubernetes client, LongContextModel model) =>
        client.CustomObjects.CreateNamespacedCustomObjectAsync<LongContextModel>(model, LongContextModel.Group, LongContextModel.Version, model.Metadata.NamespaceProperty, LongContextModel.Plural);

    public static Task<LongContextModel> GetAsync(IKubernetes client, string ns, string name) =>
        client.CustomObjects.GetNamespacedCustomObjectAsync<LongContextModel>(LongContextModel.Group, LongContextModel.Version, ns, LongContextModel.Plural, name);

    public static Task<LongContextModel> ReplaceAsync(IKubernetes client, LongContextModel model) =>
        client.CustomObjects.ReplaceNamespacedCustomObjectAsync<LongContextModel>(model, LongContextModel.Group, LongContextModel.Version, model.Metadata.NamespaceProperty, LongContextModel.Plural, model.Metadata.Name);

    /// <summary>Reads, changes and writes back the model's spec, retrying on 409.</summary>
    public static async Task<LongContextModel> UpdateSpecAsync(IKubernetes client, string ns, string name, Action<LongContextModelSpec> change)
    {
        for (var attempt = 0; ; attempt++)
        {
            var model = await GetAsync(client, ns, name);
            change(model.Spec);
            try
            {
                return await ReplaceAsync(client, model);
            }
            catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.Conflict && attempt < 5)
            {
                // The operator wrote status in between; read again.
                continue;
            }
        }
    }

    public static bool HasCondition(LongContextModel? model, string type, string status, long? generation = null) =>
        Conditions.Find(model?.Status?.Conditions, type) is { } c && c.Status == status && (generation is null || c.ObservedGeneration == generation);

    /// <summary>Plays the StatefulSet controller and kubelet: all worker and router pods ready on the current generation.</summary>
    public static void MarkReady(TestCluster cluster, string model)
    {
        var fake = cluster.RequireFake;
        var sts = fake.Get("apps", "statefulsets", cluster.Namespace, Names.WorkerStatefulSet(model))!;
        var replicas = (int)Platform.Testing.Kubernetes.JsonTools.Long(sts["spec"]!["replicas"]);
        fake.SetStatus("apps", "statefulsets", cluster.Namespace, Names.WorkerStatefulSet(model), new JsonObject
        {
            ["observedGeneration"] = Platform.Testing.Kubernetes.JsonTools.Long(sts["metadata"]!["generation"]),
            ["replicas"] = replicas,
            ["readyReplicas"] = replicas,
            ["updatedReplicas"] = replicas,
            ["currentReplicas"] = replicas,
            ["availableReplicas"] = replicas,
        });
        var deploy = fake.Get("apps", "deployments", cluster.Namespace, Names.RouterDeployment(model))!;
        var routers = (int)Platform.Testing.Kubernetes.JsonTools.Long(deploy["spec"]!["replicas"]);
        fake.SetStatus("apps", "deployments", cluster.Namespace, Names.RouterDeployment(model), new JsonObject
        {
            ["observedGeneration"] = Platform.Testing.Kubernetes.JsonTools.Long(deploy["metadata"]!["generation"]),
            ["replicas"] = routers,
            ["readyReplicas"] = routers,
            ["updatedReplicas"] = routers,
            ["availableReplicas"] = routers,
        });
    }
}
