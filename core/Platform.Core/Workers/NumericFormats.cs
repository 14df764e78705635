// The numeric formats a worker can run a model in, spelled once for every side that names them:
// the engine's parsers, the worker's switches, `platform` commands, and the operator's CRD and
// validator (whose enums are tested against these lists). Compute dtype is the width of the
// activations, norms and KV cache; weight dtype the width the projection and embedding matrices
// are held in. The operator's "auto" compute dtype is resolved here from the pod's device, so
// the rule a CPU pod and a GPU pod follow is one function, not two copies.
namespace Platform.Core.Workers;

public static class NumericFormats
{
    public const string Auto = "auto";
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720:Identifier contains type name", Justification = "The dtype's own name, as torch spells it.")]
    public const string Float32 = "float32";
    public const string BFloat16 = "bfloat16";
    public const string Float16 = "float16";

    /// <summary>The compute dtypes the engine runs (the worker's --dtype).</summary>
    public static IReadOnlyList<string> ComputeDtypes { get; } = [BFloat16, Float16, Float32];

    /// <summary>The weight widths (the worker's --weight-dtype); auto keeps the checkpoint's bfloat16/float16 width.</summary>
    public static IReadOnlyList<string> WeightDtypes { get; } = [Auto, Float32, BFloat16, Float16];

    public const string NoQuantization = "none";
    public const string Int8Weights = "int8";

    /// <summary>Weight quantizations (the worker's --quantization); int8 runs on the CPU kernels with float32 compute.</summary>
    public static IReadOnlyList<string> Quantizations { get; } = [NoQuantization, Int8Weights];

    /// <summary>
    /// The compute dtype for a model spec's dtype on a device: "auto" is float32 on a CPU (the engine's own kernels
    /// multiply narrow weights in fp32 registers, faster there than libtorch's bf16 matmuls) and bfloat16 on a GPU
    /// (tensor cores; half the KV bytes). Any other value is taken as given.
    /// </summary>
    public static string ResolveComputeDtype(string dtype, bool onGpu) =>
        dtype == Auto ? (onGpu ? BFloat16 : Float32) : dtype;
}
