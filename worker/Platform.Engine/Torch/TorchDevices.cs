// Maps the --device choice (Platform.Core's ComputeDevice) to a libtorch device,
// checking first that it is there: a worker given `--device cuda` on a machine
// without a usable GPU (no driver, no GPU, or a CPU-only libtorch build like
// this repository's default) stops at start with a message naming the device,
// instead of failing deep inside the first tensor copy.
using Platform.Core.Workers;
using TorchSharp;

namespace Platform.Engine.Torch;

/// <summary>The chosen device is not usable on this machine; the message names it and what to do.</summary>
public sealed class DeviceUnavailableException(string message) : Exception(message);

public static class TorchDevices
{
    /// <summary>Null when <paramref name="device"/> can be used here, else why not (naming the device).</summary>
    public static string? Unavailable(ComputeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.IsCpu) return null;
        NativeRuntime.Configure();
        if (!torch.cuda.is_available())
            return $"--device {device}: no CUDA device is usable on this machine (libtorch reports torch.cuda.is_available() = false: "
                + "no NVIDIA GPU or driver, or a CPU-only build; the CUDA build is made with -p:TorchBackend=cuda). Use --device cpu.";
        int count = torch.cuda.device_count();
        if ((device.Index ?? 0) >= count)
            return $"--device {device}: this machine has {count} visible CUDA device(s) (cuda:0 .. cuda:{count - 1}); pick one of them.";
        return null;
    }

    /// <summary>The libtorch device for <paramref name="device"/>; DeviceUnavailableException when it is not usable here.</summary>
    public static torch.Device Resolve(ComputeDevice device)
    {
        if (Unavailable(device) is { } reason) throw new DeviceUnavailableException(reason);
        return device.IsCpu ? torch.CPU : new torch.Device(DeviceType.CUDA, device.Index ?? 0);
    }
}
