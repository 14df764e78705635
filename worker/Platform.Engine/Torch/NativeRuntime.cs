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
// Unix, hence setenv from libc. The same initializer gives the malloc heap
// libtorch's static constructors fill transparent huge pages (PrepareHeap): on
// these VMs that halved libtorch's ~0.4 s load.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Platform.Core.Memory;
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
        if (!OperatingSystem.IsLinux()) return;
        HeapHugePages = PrepareHeap();
        if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null) return;
        _ = SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0);
    }

    /// <summary>Bytes the main malloc heap is kept grown by (M_TOP_PAD), in huge pages; see <see cref="PrepareHeap"/>.</summary>
    internal const int HeapPadBytes = 256 << 20;

    /// <summary>Whether <see cref="PrepareHeap"/> advised the heap to use huge pages.</summary>
    internal static bool HeapHugePages { get; private set; }

    /// <summary>
    /// Gives the main malloc heap transparent huge pages before libtorch loads. libtorch's static constructors allocate
    /// tens of MB in small pieces (operator tables, schemas), and on these VMs every first touch of a fresh 4 KB page
    /// is a costly fault: with glibc's own switch for this (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which a process can
    /// only get from its parent) libtorch's load took 205–245 ms instead of 364–395 (platform generate --timings, three
    /// alternating rounds). The same in-process: the heap grows by <see cref="HeapPadBytes"/> whenever it grows
    /// (mallopt M_TOP_PAD, so it is one region, kept on free), it is grown once now, and that region is advised
    /// MADV_HUGEPAGE (THP's "madvise" mode, the distributions' default). Pages are still mapped only when touched.
    /// Skipped when GLIBC_TUNABLES already sets the malloc hugetlb switch.
    /// </summary>
    private static bool PrepareHeap()
    {
        if (Environment.GetEnvironmentVariable("GLIBC_TUNABLES")?.Contains("malloc.hugetlb", StringComparison.Ordinal) == true) return false;
        const int TopPad = -2; // M_TOP_PAD
        if (MallOpt(TopPad, HeapPadBytes) != 1) return false;
        nint before = ProgramBreak(0);
        // Blocks under the mmap threshold come from the heap; the first one the heap cannot hold grows it by the pad.
        var blocks = new List<nint>();
        unsafe
        {
            try
            {
                for (int i = 0; i < 64 && ProgramBreak(0) == before; i++) blocks.Add((nint)NativeMemory.Alloc(64 * 1024));
                if (ProgramBreak(0) == before) return false;
                var (start, end) = HeapRange();
                return PageAdvice.AdviseHugePages((void*)start, end - start);
            }
            finally
            {
                foreach (var block in blocks) NativeMemory.Free((void*)block);
            }
        }
    }

    /// <summary>The main malloc heap's range ("[heap]" in /proc/self/maps), or (0, 0).</summary>
    private static (long Start, long End) HeapRange()
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            if (!line.EndsWith("[heap]", StringComparison.Ordinal)) continue;
            int dash = line.IndexOf('-', StringComparison.Ordinal), space = line.IndexOf(' ', StringComparison.Ordinal);
            return (long.Parse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture),
                long.Parse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture));
        }
        return (0, 0);
    }

    /// <summary>sbrk: with 0, the current end of the main heap (the program break), without moving it.</summary>
    [LibraryImport("libc", EntryPoint = "sbrk")]
    private static partial nint ProgramBreak(nint increment);

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallOpt(int parameter, int value);

    /// <summary>Loads libtorch now (after <see cref="Configure"/>), so the load can be timed and overlapped with other work.</summary>
    public static void Load()
    {
        Configure();
        torch.InitializeDeviceType(DeviceType.CPU);
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
