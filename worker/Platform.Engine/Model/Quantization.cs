// The --quantization option: none (weights in the weight dtype) or int8 (the decoder layers'
// projection matrices quantized at load into QuantizationQ8's format and multiplied by the int8
// GEMV; the embedding, the LM head, norms and biases keep their widths; see docs/engine.md).
// int8 needs float32 compute: its kernels widen to fp32 in registers, and the libtorch path
// dequantizes to fp32.
using Platform.Engine.Torch;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public static class Quantization
{
    public const string None = Platform.Core.Workers.NumericFormats.NoQuantization;
    /// <summary>Symmetric int8 weights, one fp16 scale per 32 inputs (QuantizationQ8).</summary>
    public const string Q8 = Platform.Core.Workers.NumericFormats.Int8Weights;

    /// <summary>Every accepted value, as the CLI help and error messages list them (spelled once in Core, for the CRD too).</summary>
    public static IReadOnlyList<string> Choices => Platform.Core.Workers.NumericFormats.Quantizations;

    /// <summary>Null when <paramref name="value"/> is a valid quantization, else the message naming the choices.</summary>
    public static string? Validate(string? value) =>
        value is not null && Choices.Contains(value.ToLowerInvariant())
            ? null
            : $"unknown quantization '{value}'; use one of {string.Join(", ", Choices)} (int8: symmetric 8-bit weights, one scale per 32 inputs, float32 compute only).";

    /// <summary>True when <paramref name="option"/> asks for int8 weights; throws on an unknown value or int8 with a compute dtype other than float32.</summary>
    public static bool IsInt8(string option, ScalarType compute)
    {
        if (Validate(option) is { } error)
            throw new ArgumentException(error);
        if (!option.Equals(Q8, StringComparison.OrdinalIgnoreCase))
            return false;
        if (compute != ScalarType.Float32)
            throw new ArgumentException(
                $"quantization int8 needs compute dtype float32 (its kernels widen int8 to float32), got {TorchDtypes.Name(compute)}; pass compute dtype float32 or quantization none.");
        return true;
    }
}
