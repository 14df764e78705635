// madvise, the one way the platform tells the kernel what to do with pages it has mapped: map a
// file's pages into the process now (MADV_POPULATE_READ, before a first forward pass would fault
// them in one by one), or hand whole pages back (MADV_DONTNEED: a private anonymous page then reads
// as zero until written; a file page is dropped from the resident set and stays in the page cache).
// Used by the checkpoint map (SafetensorsFile), the mapped weights (MappedTensors), the lazily
// zeroed KV pool (LazyZeroMemory) and the malloc heap libtorch loads into (NativeRuntime: huge pages). Linux only; elsewhere every call reports false and does nothing.
using System.Runtime.InteropServices;

namespace Platform.Core.Memory;

public static unsafe partial class PageAdvice
{
    private const int MadvDontNeed = 4;
    private const int MadvHugePage = 14;
    private const int MadvPopulateRead = 22;

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint address, nuint length, int advice);

    /// <summary>Maps the pages covering [address, address + bytes) into this process now (Linux 5.14+); false where the
    /// kernel cannot, and the pages then come at first touch.</summary>
    public static bool Populate(void* address, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0) return false;
        long page = Environment.SystemPageSize;
        long start = (long)address / page * page, end = (long)address + bytes;
        return Madvise((nint)start, (nuint)(end - start), MadvPopulateRead) == 0;
    }

    /// <summary>Asks for transparent huge pages in the 2 MB-aligned part of [address, address + bytes) (MADV_HUGEPAGE:
    /// later first touches there map 2 MB at a time); false where there is no such part, off Linux, or when refused.</summary>
    public static bool AdviseHugePages(void* address, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0) return false;
        const long Huge = 2L << 20;
        long start = ((long)address + Huge - 1) / Huge * Huge, end = ((long)address + bytes) / Huge * Huge;
        return end > start && Madvise((nint)start, (nuint)(end - start), MadvHugePage) == 0;
    }

    /// <summary>Hands back the whole pages inside [address, address + bytes) (the partial pages at either end stay);
    /// false when there are none, off Linux, or when the kernel refuses (memory that is not a private or file map).</summary>
    public static bool ReleaseWholePages(void* address, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0) return false;
        long page = Environment.SystemPageSize;
        long start = ((long)address + page - 1) / page * page, end = ((long)address + bytes) / page * page;
        return end > start && Madvise((nint)start, (nuint)(end - start), MadvDontNeed) == 0;
    }
}
