// Settings for the native runtime under libtorch that must be in place before
// it loads. libtorch's OpenMP workers spin-wait after each parallel region by
// default; on a 2-core machine they then compete with our own GEMV threads
// (Kernels/KernelPool) for the same cores, and decode slows down (bench
// `engine`, small preset, batch 1: ~250–450 tok/s passive vs ~90–200 active,
// alternating runs). So unless the user chose a policy, waiting is passive.
// .NET's Environment.SetEnvironmentVariable does not reach native code on
// Unix, hence setenv from libc.
using System.Runtime.InteropServices;

namespace Platform.Engine.Torch;

internal static partial class NativeRuntime
{
    private static int _configured;

    public static void Configure()
    {
        if (Interlocked.Exchange(ref _configured, 1) == 1) return;
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null) return;
        _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
