// Settings for the native runtime under libtorch that must be in place before
// it loads, and the load itself. libtorch's OpenMP workers spin-wait after each
// parallel region by default; on a 2-core machine they then compete with our own
// GEMV threads (Kernels/KernelPool) for the same cores, and decode slows down
// (bench `engine`, small preset, batch 1: ~250–450 tok/s passive vs ~90–200
// active, alternating runs). So unless the user chose a policy, waiting is passive.
// libgomp reads OMP_WAIT_POLICY once, when libtorch is loaded, and TorchSharp loads
// libtorch from its `torch` class's static constructor, i.e. on the first touch of
// anything in `torch` (torch.CPU included). So Configure runs from this assembly's
// module initializer, before any code of the engine can touch `torch`; a call
// made after the load changes nothing (the start of `platform generate` spent
// ~0.9 s of CPU in spinning OpenMP workers that way, docs/engine.md "Start").
// .NET's Environment.SetEnvironmentVariable does not reach native code on
// Unix, hence setenv from libc.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace Platform.Engine.Torch;

internal static partial class NativeRuntime
{
    private static int _configured;

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
        Justification = "The environment must be set before TorchSharp loads libtorch, and any engine code may be the first to touch torch; setting a variable that only libgomp reads has no other effect on the host.")]
    [ModuleInitializer]
    internal static void ConfigureOnFirstUse() => Configure();

    public static void Configure()
    {
        if (Interlocked.Exchange(ref _configured, 1) == 1) return;
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null) return;
        _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
    }

    /// <summary>Loads libtorch now (after <see cref="Configure"/>), so the load can be timed and overlapped with other work.</summary>
    public static void Load()
    {
        Configure();
        torch.InitializeDeviceType(DeviceType.CPU);
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
