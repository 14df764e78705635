// Raw data pointers of CPU tensors for our kernels. Storage pointers, not
// Tensor.bytes: a span cannot cover a tensor over 2 GB (a 128K-vocab output
// head, a large KV pool). libtorch never moves a tensor's storage, so a pointer
// taken once stays valid for the tensor's lifetime.
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

internal static unsafe class TensorPointers
{
    public static float* Float32(Tensor t)
    {
        if (t.dtype != ScalarType.Float32 || t.device_type != DeviceType.CPU)
            throw new ArgumentException($"expected a float32 CPU tensor, got {t.dtype} on {t.device_type}");
        return (float*)t.storage<float>().data_ptr() + t.storage_offset();
    }
}
