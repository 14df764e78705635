// The device the device-generic tests run on: cpu unless PLATFORM_TEST_DEVICE
// names another (scripts/gpu-check.sh sets it to cuda on a machine with a GPU).
// A device that is not usable here fails the tests that need it with the reason,
// rather than quietly testing the cpu instead.
using Platform.Core.Workers;
using Platform.Engine.Torch;
using TorchSharp;

namespace Platform.Engine.Tests;

internal static class TestDevice
{
    public const string Variable = "PLATFORM_TEST_DEVICE";

    /// <summary>The device's --device spelling (cpu when the variable is unset).</summary>
    public static string Name { get; } = Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } name ? name : ComputeDevice.CpuName;

    /// <summary>The libtorch device (DeviceUnavailableException, naming it, when it is not here).</summary>
    public static torch.Device Resolve() => TorchDevices.Resolve(ComputeDevice.Parse(Name));

    /// <summary>A line for test output: where the test ran and what it did not run.</summary>
    public static string Describe() => Name == ComputeDevice.CpuName
        ? $"device: cpu ({Variable} unset; cuda not run here: scripts/gpu-check.sh runs these tests on a GPU)"
        : $"device: {Name} (from {Variable})";
}
