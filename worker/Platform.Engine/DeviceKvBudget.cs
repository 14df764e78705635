// The KV pool's size on a GPU: the same settings as on cpu (KvMemoryBudget),
// read against the device's memory instead of the host's. --kv-blocks and
// --kv-bytes win as before; otherwise the pool takes --kv-memory-fraction of the
// device memory still free once the weights are on it.
// TorchSharp 0.107 binds no torch.cuda memory query (no mem_get_info,
// memory_allocated or get_device_properties; its torch.cuda has is_available,
// device_count, synchronize and manual_seed only), so the free memory comes from
// the NVIDIA driver's nvidia-smi, which the CUDA container runtime mounts when
// NVIDIA_DRIVER_CAPABILITIES includes "utility". Without it the size must be
// given, and the error says so.
using System.Diagnostics;
using System.Globalization;
using Platform.Engine.Torch;
using static TorchSharp.torch;

namespace Platform.Engine;

public sealed class DeviceKvBudget
{
    private readonly Func<int, long?> _freeBytes;

    /// <param name="freeBytes">Free bytes of the given CUDA ordinal, or null when unknown; default: nvidia-smi.</param>
    public DeviceKvBudget(Func<int, long?>? freeBytes = null) => _freeBytes = freeBytes ?? NvidiaSmiFreeBytes;

    /// <summary>Blocks of <paramref name="bytesPerBlock"/> the pool on <paramref name="device"/> gets (at least one).</summary>
    public int PoolBlocks(EngineOptions options, long bytesPerBlock, Device device)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerBlock, 1);
        if (options.NumKvBlocks is { } blocks) return blocks;
        long bytes = options.KvCacheBytes ?? (_freeBytes(device.index < 0 ? 0 : device.index) is { } free
            ? (long)(free * options.KvCacheMemoryFraction)
            : throw new DeviceUnavailableException(
                $"cannot size the KV pool on {device}: its free memory is unknown (TorchSharp has no CUDA memory query and nvidia-smi did not answer). "
                + "Give the size with --kv-bytes N or --kv-blocks N, or make nvidia-smi available (NVIDIA_DRIVER_CAPABILITIES=compute,utility)."));
        return (int)Math.Clamp(bytes / bytesPerBlock, 1, int.MaxValue / options.BlockSize);
    }

    /// <summary>memory.free of a CUDA ordinal from nvidia-smi (mapped through CUDA_VISIBLE_DEVICES when it lists ordinals).</summary>
    public static long? NvidiaSmiFreeBytes(int cudaOrdinal)
    {
        string id = cudaOrdinal.ToString(CultureInfo.InvariantCulture);
        var visible = Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (visible is not null && cudaOrdinal < visible.Length) id = visible[cudaOrdinal];
        try
        {
            using var process = Process.Start(new ProcessStartInfo("nvidia-smi", ["--query-gpu=memory.free", "--format=csv,noheader,nounits", "--id=" + id])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (process is null) return null;
            string text = process.StandardOutput.ReadToEnd();
            if (!process.WaitForExit(10_000) || process.ExitCode != 0) return null;
            return ParseMebibytes(text);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;   // nvidia-smi is not installed
        }
    }

    /// <summary>nvidia-smi's "12345" (MiB, no header, no unit) as bytes; null when it is not one number.</summary>
    public static long? ParseMebibytes(string text) =>
        long.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long mib) ? mib * 1024 * 1024 : null;
}
