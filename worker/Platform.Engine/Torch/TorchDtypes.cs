// Maps dtype names (config.json's torch_dtype, CLI flags) and safetensors dtypes
// to TorchSharp scalar types, with an error that lists the accepted names.
using Platform.Core;
using Platform.Core.Safetensors;
using TorchSharp;

namespace Platform.Engine.Torch;

public static class TorchDtypes
{
    public static torch.ScalarType Parse(string name) => name.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" or "float" => torch.ScalarType.Float32,
        "float16" or "fp16" or "f16" or "half" => torch.ScalarType.Float16,
        "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
        _ => throw new ArgumentException($"unknown compute dtype '{name}'; use float32 (the fast CPU path), bfloat16 or float16."),
    };

    public static string Name(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float32 => "float32",
        torch.ScalarType.Float16 => "float16",
        torch.ScalarType.BFloat16 => "bfloat16",
        _ => t.ToString().ToLowerInvariant(),
    };

    public static torch.ScalarType FromSafetensors(SafetensorsDtype d, string where) => d switch
    {
        SafetensorsDtype.F32 => torch.ScalarType.Float32,
        SafetensorsDtype.F16 => torch.ScalarType.Float16,
        SafetensorsDtype.BF16 => torch.ScalarType.BFloat16,
        SafetensorsDtype.F64 => torch.ScalarType.Float64,
        _ => throw new ModelLoadException($"{where}: dtype {d} is not a floating-point weight type; expected F32, F16 or BF16."),
    };

    public static int ElementSize(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float32 => 4,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 2,
        torch.ScalarType.Float64 => 8,
        _ => throw new ArgumentException($"unsupported dtype {t}"),
    };
}
