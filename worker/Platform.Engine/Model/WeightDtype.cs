// The width the projection and embedding weights are held in (--weight-dtype), apart from the
// compute dtype of activations, norms and the KV cache. With float32 compute, "auto" keeps the
// checkpoint's own width (bfloat16 or float16) and the GEMV widens in registers: each decode step
// reads half the bytes of fp32 weights, and resident weights are the checkpoint's bytes. With
// bfloat16/float16 compute libtorch multiplies in that dtype, so the weights are held in it.
using Platform.Core.Safetensors;
using Platform.Engine.Torch;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public static class WeightDtype
{
    public const string Auto = Platform.Core.Workers.NumericFormats.Auto;

    /// <summary>Every accepted value, as the CLI help and error messages list them (spelled once in Core, for the operator's CRD too).</summary>
    public static IReadOnlyList<string> Choices => Platform.Core.Workers.NumericFormats.WeightDtypes;

    /// <summary>Null when <paramref name="value"/> is a valid weight dtype, else the message naming the choices.</summary>
    public static string? Validate(string? value) =>
        value is not null && Choices.Contains(value.ToLowerInvariant())
            ? null
            : $"unknown weight dtype '{value}'; use one of {string.Join(", ", Choices)} (auto keeps the checkpoint's bfloat16/float16 width; float32 widens every weight at load).";

    /// <summary>The scalar type weights are held in, for a checkpoint stored as <paramref name="checkpoint"/>.</summary>
    public static ScalarType Resolve(string option, SafetensorsDtype checkpoint, ScalarType compute)
    {
        if (Validate(option) is { } error)
            throw new ArgumentException(error);
        string name = option.ToLowerInvariant();
        if (compute != ScalarType.Float32)
        {
            if (name == Auto || TorchDtypes.Parse(name) == compute)
                return compute;
            throw new ArgumentException(
                $"weight dtype {name} needs float32 compute: with compute dtype {TorchDtypes.Name(compute)} libtorch multiplies in {TorchDtypes.Name(compute)} and the weights are held in it; pass weight dtype auto, or compute dtype float32.");
        }
        if (name != Auto)
            return TorchDtypes.Parse(name);
        return checkpoint switch
        {
            SafetensorsDtype.BF16 => ScalarType.BFloat16,
            SafetensorsDtype.F16 => ScalarType.Float16,
            _ => ScalarType.Float32,
        };
    }
}
