// Raw data pointers of CPU tensors for our kernels. Storage pointers, not
// Tensor.bytes: a span cannot cover a tensor over 2 GB (a 128K-vocab output
// head, a large KV pool). libtorch never moves a tensor's storage, so a pointer
// taken once stays valid for the tensor's lifetime.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Torch;

internal static unsafe class TensorPointers
{
    public static float* Float32(Tensor t)
    {
        if (t.dtype != ScalarType.Float32 || t.device_type != DeviceType.CPU)
            throw new ArgumentException($"expected a float32 CPU tensor, got {t.dtype} on {t.device_type}");
        return (float*)t.storage<float>().data_ptr() + t.storage_offset();
    }

    /// <summary>
    /// The first element of a contiguous CPU tensor of any element type (bfloat16 and float16 KV pools
    /// included, which TorchSharp's typed storage cannot address without a converting copy). Taken from
    /// a one-element view, so its span stays small whatever the tensor's size.
    /// </summary>
    public static byte* Data(Tensor t)
    {
        if (t.device_type != DeviceType.CPU || !t.is_contiguous() || t.numel() == 0)
            throw new ArgumentException($"expected a non-empty contiguous CPU tensor, got {t.dtype} on {t.device_type}");
        using var flat = t.view(-1);
        using var first = flat.narrow(0, 0, 1);
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(first.bytes));
    }
}
