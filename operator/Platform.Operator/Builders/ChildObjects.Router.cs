// The router Deployment: platform-router with Kubernetes discovery of this model's workers,
// the model mounted for its tokenizer and chat template (or, for hf://, downloaded into the
// pod's hub cache by an init container running the router image: ChildObjects.Hub.cs).
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1Deployment BuildRouter(LongContextModel model, ImageDefaults images, string configHash)
    {
        var name = model.Metadata.Name;
        var spec = model.Spec;
        var env = new List<V1EnvVar>
        {
            new() { Name = "POD_NAMESPACE", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.namespace" } } },
            PodIpEnv(),
            // The router's drain: in-flight requests may finish for this long after SIGTERM (the pod's grace is longer).
            new() { Name = Shutdown.HostShutdownTimeoutVariable, Value = Shutdown.RouterShutdownSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        };
        if (spec.Router.ApiKeySecretRef is { } apiKey)
        {
            // The router reads Router:ApiKeys; the environment form of that key.
            env.Add(SecretEnv("Router__ApiKeys", apiKey));
        }

        string image = string.IsNullOrEmpty(spec.Router.Image) ? images.RouterImage : spec.Router.Image;
        var container = new V1Container
        {
            Name = "router",
            Image = image,
            ImagePullPolicy = images.PullPolicy,
            Args = RouterArgs(model),
            Env = env,
            Ports = [new V1ContainerPort { Name = "http", ContainerPort = Names.HttpPort, Protocol = "TCP" }],
            LivenessProbe = Probe("/healthz", periodSeconds: 10, failureThreshold: 3),
            ReadinessProbe = Probe("/readyz", periodSeconds: 5, failureThreshold: 2),
            // The router tokenizes with the model's own tokenizer and chat template: it mounts the model too.
            VolumeMounts = [new V1VolumeMount { Name = "tmp", MountPath = "/tmp" }, .. ModelMounts(model)],
            SecurityContext = ContainerSecurity(),
        };
        var template = WithHubDownload(
            WithGrace(PodTemplate(model, Names.RouterComponent, configHash, container, nodeSelector: null, tolerations: null), Shutdown.RouterTerminationGraceSeconds),
            model, image, images.PullPolicy, RouterDownloadArgs(model));
        // The router watches the workers' EndpointSlices: its own account, the token mounted.
        template.Spec.ServiceAccountName = Names.RouterAccount(name);
        template.Spec.AutomountServiceAccountToken = true;
        return new V1Deployment
        {
            ApiVersion = "apps/v1",
            Kind = "Deployment",
            Metadata = Meta(model, Names.RouterDeployment(name), Names.RouterComponent),
            Spec = new V1DeploymentSpec
            {
                Replicas = spec.Router.Replicas,
                Selector = new V1LabelSelector { MatchLabels = Names.SelectorLabels(name, Names.RouterComponent) },
                Template = template,
            },
        };
    }

    /// <summary>The router image's download step for an hf:// model: fill the hub cache, then exit.</summary>
    public static List<string> RouterDownloadArgs(LongContextModel model) => ["--model", model.Spec.Model.Source, "--download-only", "true"];

    /// <summary>The platform-router switches (docs/router.md): Kubernetes discovery of this model's workers.</summary>
    public static List<string> RouterArgs(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return
        [
            "--model", ModelLocation(model.Spec.Model).Path,
            "--discovery", "kubernetes",
            "--worker-service", Names.WorkerHeadlessService(name),
            // Expanded by the kubelet from the env var (the pod's own namespace).
            "--namespace", "$(POD_NAMESPACE)",
            "--worker-port-name", Names.WorkerGrpcPortName,
            "--host", $"$({PodIpVariable})",
            "--port", Names.HttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--policy", RouterPolicy(model.Spec.Router.Policy),
            "--migration-limit", model.Spec.Router.MigrationLimit.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--served-model-name", model.Spec.Model.ServedName,
            .. (model.Spec.Router.ToolCallParser is { Length: > 0 } parser ? new[] { "--tool-call-parser", parser } : []),
        ];
    }

    /// <summary>The CRD's policy enum in the router's spelling.</summary>
    public static string RouterPolicy(string policy) => policy switch
    {
        "LeastLoaded" => "least-loaded",
        "RoundRobin" => "round-robin",
        _ => "kv-aware",
    };
}
