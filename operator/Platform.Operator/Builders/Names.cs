// Names and labels of the objects the operator creates for one LongContextModel, in one place so
// builders, reconciler, NetworkPolicy and router discovery cannot disagree.
namespace Platform.Operator.Builders;

public static class Names
{
    public const string ManagedBy = "platform-operator";
    public const string NameLabel = "app.kubernetes.io/name";
    public const string InstanceLabel = "app.kubernetes.io/instance";
    public const string ComponentLabel = "app.kubernetes.io/component";
    public const string ManagedByLabel = "app.kubernetes.io/managed-by";
    /// <summary>The label Kubernetes puts on every namespace with its own name.</summary>
    public const string NamespaceNameLabel = "kubernetes.io/metadata.name";
    public const string AppName = "longcontextmodel";
    public const string WorkerComponent = "worker";
    public const string RouterComponent = "router";

    /// <summary>Hash of the ConfigMap data on the pod templates: a config change restarts pods.</summary>
    public const string ConfigHashAnnotation = "serving.longcontext.dev/config-hash";

    /// <summary>Hash of the desired child object: the reconciler replaces a child only when it differs.</summary>
    public const string SpecHashAnnotation = "serving.longcontext.dev/spec-hash";

    public const string Finalizer = "serving.longcontext.dev/kv-purge";

    public const int WorkerGrpcPort = 50051;
    public const int HttpPort = 8080;
    public const int RouterServicePort = 80;

    public static string ConfigMap(string model) => model + "-config";
    public static string WorkerStatefulSet(string model) => model + "-worker";
    public static string WorkerHeadlessService(string model) => model + "-workers";
    public static string RouterDeployment(string model) => model + "-router";
    public static string RouterService(string model) => model;

    /// <summary>The router's ServiceAccount, and the Role and RoleBinding that let it list and watch EndpointSlices.</summary>
    public static string RouterAccount(string model) => model + "-router";

    /// <summary>Name of the worker gRPC port on the headless Service (and so on its EndpointSlices); the router selects it by name.</summary>
    public const string WorkerGrpcPortName = "grpc";
    public static string WorkerDisruptionBudget(string model) => model + "-worker";
    public static string WorkerNetworkPolicy(string model) => model + "-worker";

    public static Dictionary<string, string> SelectorLabels(string model, string component) => new(StringComparer.Ordinal)
    {
        [NameLabel] = AppName,
        [InstanceLabel] = model,
        [ComponentLabel] = component,
    };

    public static Dictionary<string, string> Labels(string model, string component)
    {
        var labels = SelectorLabels(model, component);
        labels[ManagedByLabel] = ManagedBy;
        return labels;
    }

    /// <summary>The worker selector as a label-selector string (status.selector, for HPA).</summary>
    public static string WorkerSelector(string model) =>
        string.Join(",", SelectorLabels(model, WorkerComponent).OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value));

    /// <summary>Prefix of every remote KV key of one model; the finalizer purges exactly these.</summary>
    public static string KvKeyPrefix(string ns, string model) => $"lcm:{ns}:{model}:";

    public static string Endpoint(string model, string ns) => $"http://{RouterService(model)}.{ns}.svc:{RouterServicePort}";
}
