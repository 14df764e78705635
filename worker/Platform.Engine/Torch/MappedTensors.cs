// Tensors over memory the engine does not own: a checkpoint's bytes in a read-only memory map.
// TorchSharp only builds tensors over managed arrays, so this calls LibTorchSharp's own factory
// (THSTensor_new, which wraps libtorch's from_blob) with a deleter that does nothing: the map is
// released by whoever opened it (LlamaWeights keeps the safetensors files open for exactly as
// long as its tensors live). Starting a model this way costs no copy and no fresh memory: on
// this VM a first touch of anonymous memory runs at ~1 GB/s (the kernel zeroes each page and the
// hypervisor backs it), so copying a 2.2 GB checkpoint took most of a 12-15 s start, while the
// file's pages are already in the page cache. The map is read-only: a write into a borrowed
// tensor faults, which is the point (weights are never written).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Platform.Core.Memory;
using static TorchSharp.torch;

namespace Platform.Engine.Torch;

internal static unsafe class MappedTensors
{
    // LibTorchSharp's signature (src/Native/LibTorchSharp/THSTensorFactories.cpp, TorchSharp 0.107): the element type of
    // the data, the dtype of the tensor (equal here: no conversion), the device (0 = CPU: no move).
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_new(void* data, delegate* unmanaged[Cdecl]<void*, void> deleter, long* sizes, int dimensions,
        sbyte elementType, sbyte dtype, int deviceType, int deviceIndex, [MarshalAs(UnmanagedType.U1)] bool requiresGrad);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void LeaveToOwner(void* data)
    {
        // The memory belongs to the map's owner, which outlives the tensor.
    }

    /// <summary>
    /// A CPU tensor of <paramref name="type"/> and <paramref name="shape"/> over <paramref name="data"/>, without a copy.
    /// The caller keeps the memory alive (and unchanged) for as long as the tensor or any view of it is used.
    /// </summary>
    public static Tensor Borrow(void* data, long[] shape, ScalarType type)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (data == null) throw new ArgumentNullException(nameof(data));
        IntPtr handle;
        fixed (long* sizes = shape)
            handle = THSTensor_new(data, &LeaveToOwner, sizes, shape.Length, (sbyte)type, (sbyte)type, 0, 0, false);
        if (handle == IntPtr.Zero)
            throw new InvalidOperationException($"libtorch could not wrap {TorchDtypes.Name(type)} [{string.Join(", ", shape)}] at 0x{(nint)data:x} as a tensor.");
        return Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>
    /// Drops the whole pages inside [data, data + bytes) of a read-only file map from this process's resident set
    /// (Linux; elsewhere nothing). The page cache keeps them, and a later read maps them again: used once a part of the
    /// checkpoint has been copied (converted or fused) and its mapped pages would otherwise count twice in the RSS.
    /// </summary>
    public static void Release(void* data, long bytes) => _ = PageAdvice.ReleaseWholePages(data, bytes);
}
