// Cross-field checks of a LongContextModel spec. The CRD enforces the same rules with OpenAPI
// bounds and CEL (x-kubernetes-validations); this copy catches specs that slipped past them
// (an older CRD, a cluster without CEL) so the reconciler can report Degraded instead of
// rolling out something the engine would refuse.
using Platform.Core.Models.Hub;
using Platform.Core.Workers;

namespace Platform.Operator.Api;

public static class SpecValidator
{
    /// <summary>spec.model.dtype: auto (resolved by the pod's device) or one of the engine's compute dtypes.</summary>
    public static IReadOnlyList<string> Dtypes { get; } = [NumericFormats.Auto, .. NumericFormats.ComputeDtypes];
    /// <summary>Why hub settings on a non-hub source are refused; the CRD's CEL rule on spec.model carries the same message (CrdSchemaTests).</summary>
    public const string HubFieldsNeedHubSource =
        "hubTokenSecret, hubEndpoint and cacheClaim apply to hf:// sources only; remove them or use source: hf://ORG/NAME";

    public static readonly IReadOnlySet<string> Policies = new HashSet<string>(StringComparer.Ordinal) { "KvAware", "LeastLoaded", "RoundRobin" };

    /// <summary>Returns every problem found; empty when the spec is valid.</summary>
    public static IReadOnlyList<string> Validate(LongContextModelSpec spec)
    {
        var errors = new List<string>();
        var model = spec.Model;
        if (string.IsNullOrWhiteSpace(model.Source))
        {
            errors.Add("spec.model.source is required");
        }
        else if (HubModelReference.IsHubSource(model.Source))
        {
            // Downloaded by the pods' init containers; the same parser as the worker's and the router's.
            try { HubModelReference.Parse(model.Source); }
            catch (ArgumentException e) { errors.Add($"spec.model.source: {e.Message}"); }
            if (model.HubEndpoint is { } endpoint && !(Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"))
                errors.Add($"spec.model.hubEndpoint '{endpoint}' must be the hub's http(s):// base URL, e.g. https://huggingface.co or your mirror's");
        }
        else if (!(model.Source.StartsWith("pvc://", StringComparison.Ordinal) || model.Source.StartsWith("file:///", StringComparison.Ordinal)))
        {
            errors.Add($"spec.model.source '{model.Source}' must start with pvc:// or file:///");
        }

        if (!HubModelReference.IsHubSource(model.Source) && (model.HubTokenSecret is not null || model.HubEndpoint is not null || model.CacheClaim is not null))
        {
            errors.Add($"spec.model: {HubFieldsNeedHubSource}");
        }

        if (string.IsNullOrWhiteSpace(model.ServedName))
        {
            errors.Add("spec.model.servedName is required");
        }

        if (!Dtypes.Contains(model.Dtype))
        {
            errors.Add($"spec.model.dtype '{model.Dtype}' must be one of {string.Join(", ", Dtypes)}");
        }

        if (!NumericFormats.WeightDtypes.Contains(model.WeightDtype))
        {
            errors.Add($"spec.model.weightDtype '{model.WeightDtype}' must be one of {string.Join(", ", NumericFormats.WeightDtypes)}");
        }
        else if (Dtypes.Contains(model.Dtype)
            && NumericFormats.ResolveComputeDtype(model.Dtype, spec.Worker.Resources.Gpus > 0) is var compute
            && compute != NumericFormats.Float32 && model.WeightDtype != NumericFormats.Auto && model.WeightDtype != compute)
        {
            // The engine's rule (WeightDtype.Resolve): only fp32 compute widens narrower weights in registers.
            errors.Add($"spec.model.weightDtype {model.WeightDtype} needs float32 compute, but these pods compute in {compute}; set weightDtype: auto, or dtype: float32");
        }

        if (!NumericFormats.Quantizations.Contains(model.Quantization))
        {
            errors.Add($"spec.model.quantization '{model.Quantization}' must be one of {string.Join(", ", NumericFormats.Quantizations)}");
        }
        else if (model.Quantization == NumericFormats.Int8Weights && spec.Worker.Resources.Gpus > 0)
        {
            errors.Add("spec.model.quantization int8 runs on the CPU kernels only; with gpus > 0 set quantization: none");
        }
        else if (model.Quantization == NumericFormats.Int8Weights && Dtypes.Contains(model.Dtype)
            && NumericFormats.ResolveComputeDtype(model.Dtype, onGpu: false) != NumericFormats.Float32)
        {
            errors.Add($"spec.model.quantization int8 needs float32 compute, but dtype is {model.Dtype}; set dtype: auto or float32");
        }

        if (model.MaxContextTokens < 1)
        {
            errors.Add("spec.model.maxContextTokens must be at least 1");
        }

        if (spec.Replicas < 0)
        {
            errors.Add("spec.replicas must not be negative");
        }

        var auto = spec.Autoscaling;
        if (auto.MinReplicas < 0 || auto.MaxReplicas < 1)
        {
            errors.Add("spec.autoscaling.minReplicas must be >= 0 and maxReplicas >= 1");
        }

        if (auto.MinReplicas > auto.MaxReplicas)
        {
            errors.Add($"spec.autoscaling.minReplicas ({auto.MinReplicas}) must be <= maxReplicas ({auto.MaxReplicas})");
        }

        if (auto.TargetKvUtilization is <= 0 or > 1 || double.IsNaN(auto.TargetKvUtilization))
        {
            errors.Add("spec.autoscaling.targetKvUtilization must be in (0, 1]");
        }

        if (auto.TargetQueuedPrefillTokensPerReplica < 1)
        {
            errors.Add("spec.autoscaling.targetQueuedPrefillTokensPerReplica must be at least 1");
        }

        if (auto.IntervalSeconds < 1 || auto.ScaleUpStabilizationSeconds < 0 || auto.ScaleDownStabilizationSeconds < 0)
        {
            errors.Add("spec.autoscaling intervals must be positive and stabilisation windows not negative");
        }

        var engine = spec.Worker.Engine;
        if (engine.BlockSize < 1 || engine.BlockSize > 1024 || (engine.BlockSize & (engine.BlockSize - 1)) != 0)
        {
            errors.Add($"spec.worker.engine.blockSize ({engine.BlockSize}) must be a power of two between 1 and 1024");
        }

        if (engine.MaxBatchTokens < engine.BlockSize)
        {
            errors.Add("spec.worker.engine.maxBatchTokens must be at least blockSize");
        }

        if (engine.KvMemoryFraction is <= 0 or > 1 || double.IsNaN(engine.KvMemoryFraction))
        {
            errors.Add("spec.worker.engine.kvMemoryFraction must be in (0, 1]");
        }

        if (engine.KvCacheTokens is < 1)
        {
            errors.Add("spec.worker.engine.kvCacheTokens must be at least 1 (or unset to size the KV cache from memory)");
        }

        if (spec.Worker.Resources.Gpus < 0)
        {
            errors.Add("spec.worker.resources.gpus must not be negative");
        }

        if (!IsExtendedResourceName(spec.Worker.Resources.GpuResource))
        {
            errors.Add($"spec.worker.resources.gpuResource '{spec.Worker.Resources.GpuResource}' must be an extended resource name DOMAIN/NAME, such as nvidia.com/gpu or amd.com/gpu");
        }

        if (spec.KvCache.Remote is { } remote && string.IsNullOrWhiteSpace(remote.Redis.Address))
        {
            errors.Add("spec.kvCache.remote.redis.address is required when remote is set");
        }

        if (spec.KvCache.DistAttention.Enabled && spec.KvCache.DistAttention.MaxPeers < 1)
        {
            errors.Add("spec.kvCache.distAttention.maxPeers must be at least 1 when DistAttention is enabled");
        }

        if (spec.Router.Replicas < 1)
        {
            errors.Add("spec.router.replicas must be at least 1");
        }

        if (spec.Router.MigrationLimit is < 0 or > 10)
        {
            errors.Add($"spec.router.migrationLimit is {spec.Router.MigrationLimit}; use 0..10 (0 turns request migration off)");
        }

        if (!Policies.Contains(spec.Router.Policy))
        {
            errors.Add($"spec.router.policy '{spec.Router.Policy}' must be one of KvAware, LeastLoaded, RoundRobin");
        }

        return errors;
    }

    /// <summary>A vendor-prefixed extended resource name (the CRD's pattern on gpuResource).</summary>
    public static bool IsExtendedResourceName(string? name) =>
        name is not null && System.Text.RegularExpressions.Regex.IsMatch(
            name, "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
}
