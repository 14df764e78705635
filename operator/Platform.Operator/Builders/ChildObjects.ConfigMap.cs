// The model's ConfigMap: the engine and router settings the pods mount at /etc/platform
// (engine.json); its hash is in the pod templates, so a change rolls the pods.
using System.Text.Json;
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1ConfigMap BuildConfigMap(LongContextModel model)
    {
        var name = model.Metadata.Name;
        var ns = model.Metadata.NamespaceProperty;
        var spec = model.Spec;
        var engine = new
        {
            model = new { source = spec.Model.Source, servedName = spec.Model.ServedName, dtype = Platform.Core.Workers.NumericFormats.ResolveComputeDtype(spec.Model.Dtype, spec.Worker.Resources.Gpus > 0), weightDtype = spec.Model.WeightDtype, quantization = spec.Model.Quantization, maxContextTokens = spec.Model.MaxContextTokens },
            engine = new { blockSize = spec.Worker.Engine.BlockSize, maxBatchTokens = spec.Worker.Engine.MaxBatchTokens, kvMemoryFraction = spec.Worker.Engine.KvMemoryFraction },
            kvCache = new
            {
                hostMemory = spec.KvCache.HostMemory,
                remote = spec.KvCache.Remote is { } r ? new { address = r.Redis.Address, ttlSeconds = r.TtlSeconds, keyPrefix = Names.KvKeyPrefix(ns, name), passwordEnv = r.Redis.SecretRef is null ? null : "REDIS_PASSWORD" } : null,
                distAttention = new { enabled = spec.KvCache.DistAttention.Enabled, maxPeers = spec.KvCache.DistAttention.MaxPeers },
            },
            ports = new { grpc = Names.WorkerGrpcPort, http = Names.HttpPort },
            peers = new { service = $"{Names.WorkerHeadlessService(name)}.{ns}.svc", statefulSet = Names.WorkerStatefulSet(name) },
        };
        return new V1ConfigMap
        {
            ApiVersion = "v1",
            Kind = "ConfigMap",
            Metadata = Meta(model, Names.ConfigMap(name), Names.WorkerComponent),
            Data = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["engine.json"] = JsonSerializer.Serialize(engine, ConfigJson),
            },
        };
    }
}
