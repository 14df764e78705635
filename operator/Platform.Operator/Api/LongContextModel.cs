// The LongContextModel custom resource (serving.longcontext.dev/v1alpha1) as C# types.
// crds/longcontextmodels.yaml is the schema the API server enforces; a test walks both and
// fails when a field, a required marker or a default differs. Defaults live in the property
// initialisers so the operator sees the same values whether or not the API server defaulted.
using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Platform.Operator.Api;

/// <summary>One served long-context model: worker StatefulSet, router, config, policies.</summary>
public sealed class LongContextModel : IKubernetesObject<V1ObjectMeta>, ISpec<LongContextModelSpec>, IStatus<LongContextModelStatus?>
{
    public const string Group = "serving.longcontext.dev";
    public const string Version = "v1alpha1";
    public const string ApiGroupVersion = Group + "/" + Version;
    public const string KindName = "LongContextModel";
    public const string Plural = "longcontextmodels";
    public const string ShortName = "lcm";

    [JsonPropertyName("apiVersion")]
    public string ApiVersion { get; set; } = ApiGroupVersion;

    [JsonPropertyName("kind")]
    public string Kind { get; set; } = KindName;

    [JsonPropertyName("metadata")]
    public V1ObjectMeta Metadata { get; set; } = new();

    [JsonPropertyName("spec")]
    public LongContextModelSpec Spec { get; set; } = new();

    [JsonPropertyName("status")]
    public LongContextModelStatus? Status { get; set; }
}

/// <summary>List form returned by list and used by watch.</summary>
public sealed class LongContextModelList : IKubernetesObject<V1ListMeta>, IItems<LongContextModel>
{
    [JsonPropertyName("apiVersion")]
    public string ApiVersion { get; set; } = LongContextModel.ApiGroupVersion;

    [JsonPropertyName("kind")]
    public string Kind { get; set; } = LongContextModel.KindName + "List";

    [JsonPropertyName("metadata")]
    public V1ListMeta Metadata { get; set; } = new();

    [JsonPropertyName("items")]
    public IList<LongContextModel> Items { get; set; } = [];
}

public sealed class LongContextModelSpec
{
    [JsonPropertyName("model")]
    [SchemaRequired]
    public ModelSpec Model { get; set; } = new();

    /// <summary>Worker replicas; the scale subresource's spec.replicas.</summary>
    [JsonPropertyName("replicas")]
    public int Replicas { get; set; } = 1;

    [JsonPropertyName("autoscaling")]
    public AutoscalingSpec Autoscaling { get; set; } = new();

    [JsonPropertyName("worker")]
    public WorkerSpec Worker { get; set; } = new();

    [JsonPropertyName("kvCache")]
    public KvCacheSpec KvCache { get; set; } = new();

    [JsonPropertyName("router")]
    public RouterSpec Router { get; set; } = new();
}

public sealed class ModelSpec
{
    /// <summary>pvc://claim/path, file:///path, or hf://ORG/NAME[@REV] (an init container downloads it into the hub cache).</summary>
    [JsonPropertyName("source")]
    [SchemaRequired]
    public string Source { get; set; } = "";

    /// <summary>The model name clients put in OpenAI requests.</summary>
    [JsonPropertyName("servedName")]
    [SchemaRequired]
    public string ServedName { get; set; } = "";

    /// <summary>Compute dtype (activations, KV cache): auto is float32 on CPU pods and bfloat16 on GPU pods
    /// (NumericFormats.ResolveComputeDtype).</summary>
    [JsonPropertyName("dtype")]
    public string Dtype { get; set; } = "auto";

    /// <summary>Width the weight matrices are held in; auto keeps the checkpoint's bfloat16/float16.</summary>
    [JsonPropertyName("weightDtype")]
    public string WeightDtype { get; set; } = "auto";

    /// <summary>none, or int8: projections quantized at load (CPU pods with float32 compute only).</summary>
    [JsonPropertyName("quantization")]
    public string Quantization { get; set; } = "none";

    [JsonPropertyName("maxContextTokens")]
    public long MaxContextTokens { get; set; } = 131072;

    /// <summary>hf:// only: a Secret in the model's namespace whose key HF_TOKEN is the hub token (private or gated repositories).
    /// Only the download init containers get it.</summary>
    [JsonPropertyName("hubTokenSecret")]
    public string? HubTokenSecret { get; set; }

    /// <summary>hf:// only: the hub's base URL (a mirror), as HF_ENDPOINT; default https://huggingface.co.</summary>
    [JsonPropertyName("hubEndpoint")]
    public string? HubEndpoint { get; set; }

    /// <summary>hf:// only: an existing PersistentVolumeClaim that holds the hub cache, so restarted and other pods find the
    /// model there instead of downloading it again (ReadWriteMany to share it between pods); default an emptyDir per pod.</summary>
    [JsonPropertyName("cacheClaim")]
    public string? CacheClaim { get; set; }
}

public sealed class AutoscalingSpec
{
    [JsonPropertyName("enabled")]
    public bool Enabled { get; set; }

    [JsonPropertyName("minReplicas")]
    public int MinReplicas { get; set; } = 1;

    [JsonPropertyName("maxReplicas")]
    public int MaxReplicas { get; set; } = 4;

    [JsonPropertyName("targetQueuedPrefillTokensPerReplica")]
    public long TargetQueuedPrefillTokensPerReplica { get; set; } = 16384;

    [JsonPropertyName("targetKvUtilization")]
    public double TargetKvUtilization { get; set; } = 0.8;

    [JsonPropertyName("scaleUpStabilizationSeconds")]
    public int ScaleUpStabilizationSeconds { get; set; }

    [JsonPropertyName("scaleDownStabilizationSeconds")]
    public int ScaleDownStabilizationSeconds { get; set; } = 300;

    [JsonPropertyName("intervalSeconds")]
    public int IntervalSeconds { get; set; } = 15;
}

public sealed class WorkerSpec
{
    /// <summary>Worker image; empty means the operator's configured default.</summary>
    [JsonPropertyName("image")]
    public string? Image { get; set; }

    [JsonPropertyName("resources")]
    public WorkerResources Resources { get; set; } = new();

    [JsonPropertyName("nodeSelector")]
    public IDictionary<string, string>? NodeSelector { get; set; }

    [JsonPropertyName("tolerations")]
    public IList<V1Toleration>? Tolerations { get; set; }

    [JsonPropertyName("engine")]
    public EngineSpec Engine { get; set; } = new();
}

public sealed class WorkerResources
{
    /// <summary>GPUs per worker pod (of <see cref="GpuResource"/>); 0 runs on CPU. Above 0 the worker runs with --device cuda.</summary>
    [JsonPropertyName("gpus")]
    public int Gpus { get; set; }

    /// <summary>The extended resource the GPUs are requested as: nvidia.com/gpu, or another vendor's (amd.com/gpu).</summary>
    [JsonPropertyName("gpuResource")]
    public string GpuResource { get; set; } = "nvidia.com/gpu";

    [JsonPropertyName("cpu")]
    public string? Cpu { get; set; }

    [JsonPropertyName("memory")]
    public string? Memory { get; set; }
}

public sealed class EngineSpec
{
    /// <summary>Tokens per KV block; a power of two (router and engine must agree).</summary>
    [JsonPropertyName("blockSize")]
    public int BlockSize { get; set; } = 16;

    [JsonPropertyName("maxBatchTokens")]
    public int MaxBatchTokens { get; set; } = 8192;

    [JsonPropertyName("kvMemoryFraction")]
    public double KvMemoryFraction { get; set; } = 0.9;

    /// <summary>Caps each worker's KV cache at this many tokens (whole blocks); overrides the fraction.</summary>
    [JsonPropertyName("kvCacheTokens")]
    public int? KvCacheTokens { get; set; }
}

public sealed class KvCacheSpec
{
    /// <summary>Host-memory KV tier size per worker, a Kubernetes quantity such as 64Gi.</summary>
    [JsonPropertyName("hostMemory")]
    public string? HostMemory { get; set; }

    [JsonPropertyName("remote")]
    public RemoteKvSpec? Remote { get; set; }

    [JsonPropertyName("distAttention")]
    public DistAttentionSpec DistAttention { get; set; } = new();
}

public sealed class RemoteKvSpec
{
    [JsonPropertyName("redis")]
    [SchemaRequired]
    public RedisSpec Redis { get; set; } = new();

    [JsonPropertyName("ttlSeconds")]
    public int TtlSeconds { get; set; } = 3600;

    /// <summary>When true a finalizer purges the model's keys from Redis on delete.</summary>
    [JsonPropertyName("purgeOnDelete")]
    public bool PurgeOnDelete { get; set; }
}

public sealed class RedisSpec
{
    /// <summary>host:port of a Redis-compatible store.</summary>
    [JsonPropertyName("address")]
    [SchemaRequired]
    public string Address { get; set; } = "";

    [JsonPropertyName("secretRef")]
    public SecretKeyRef? SecretRef { get; set; }
}

public sealed class SecretKeyRef
{
    [JsonPropertyName("name")]
    [SchemaRequired]
    public string Name { get; set; } = "";

    [JsonPropertyName("key")]
    public string Key { get; set; } = "password";
}

public sealed class DistAttentionSpec
{
    [JsonPropertyName("enabled")]
    public bool Enabled { get; set; }

    [JsonPropertyName("maxPeers")]
    public int MaxPeers { get; set; } = 4;
}

public sealed class RouterSpec
{
    [JsonPropertyName("image")]
    public string? Image { get; set; }

    [JsonPropertyName("replicas")]
    public int Replicas { get; set; } = 1;

    /// <summary>KvAware, LeastLoaded or RoundRobin.</summary>
    [JsonPropertyName("policy")]
    public string Policy { get; set; } = "KvAware";

    /// <summary>How many times a request may move to another worker when its worker fails mid-stream (0: never); the router's --migration-limit.</summary>
    [JsonPropertyName("migrationLimit")]
    public int MigrationLimit { get; set; } = 3;

    /// <summary>The format the model writes tool calls in (hermes, llama3_json); the router's --tool-call-parser. Null: tool calls are not read.</summary>
    [JsonPropertyName("toolCallParser")]
    public string? ToolCallParser { get; set; }

    [JsonPropertyName("apiKeySecretRef")]
    public SecretKeyRef? ApiKeySecretRef { get; set; }
}

public sealed class LongContextModelStatus
{
    [JsonPropertyName("observedGeneration")]
    public long? ObservedGeneration { get; set; }

    [JsonPropertyName("replicas")]
    public int Replicas { get; set; }

    [JsonPropertyName("readyReplicas")]
    public int ReadyReplicas { get; set; }

    /// <summary>Label selector of the worker pods, for the scale subresource (HPA).</summary>
    [JsonPropertyName("selector")]
    public string? Selector { get; set; }

    /// <summary>In-cluster URL of the router's OpenAI endpoint.</summary>
    [JsonPropertyName("endpoint")]
    public string? Endpoint { get; set; }

    [JsonPropertyName("conditions")]
    public IList<V1Condition>? Conditions { get; set; }
}

/// <summary>Marks a property the CRD schema lists as required (checked against the YAML by a test).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SchemaRequiredAttribute : Attribute;
