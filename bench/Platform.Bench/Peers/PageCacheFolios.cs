// How much of a file the page cache holds in 2 MB folios, and a way to read a file into the cache afresh.
// Why: on the test VMs a decode that streams a checkpoint from its mapped pages ran ~1.4x faster when the
// page cache held the file in 2 MB folios (mapped as 2 MB pages) than in 4 KB ones, and which one a file
// gets depends on memory fragmentation when it was written or read in, and drifts (docs/engine.md, "Start",
// eighth session). A peer comparison over two files is only fair when both are alike, so the bench prints
// the share of each, and --peer-recache drops both from the cache and reads them back before the rounds.
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Platform.Core.Memory;

namespace Platform.Bench.Peers;

internal static partial class PageCacheFolios
{
    /// <summary>
    /// The fraction of <paramref name="path"/> this process maps as 2 MB pages once every page is mapped
    /// (FilePmdMapped over the file's size in /proc/self/smaps); null off Linux or when smaps lacks the field.
    /// </summary>
    public static unsafe double? HugeShare(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        long length = new FileInfo(path).Length;
        if (length == 0) return null;
        using var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        try
        {
            byte* start = pointer + view.PointerOffset;
            PageAdvice.Populate(start, length);
            long? pmdKb = null;
            bool inMap = false;
            foreach (var line in File.ReadLines("/proc/self/smaps"))
            {
                if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-', StringComparison.Ordinal) && line.Contains(' ', StringComparison.Ordinal))
                {
                    long low = long.Parse(line.AsSpan(0, line.IndexOf('-', StringComparison.Ordinal)), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                    inMap = low <= (long)start && (long)start < low + length + (2L << 20);
                    continue;
                }
                if (inMap && line.StartsWith("FilePmdMapped:", StringComparison.Ordinal))
                    pmdKb = (pmdKb ?? 0) + long.Parse(line.AsSpan(14).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
            }
            return pmdKb is { } kb ? Math.Min(1.0, kb * 1024.0 / length) : null;
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    /// <summary>Drops <paramref name="path"/> from the page cache (POSIX_FADV_DONTNEED) and reads it back in sequentially.</summary>
    public static void Recache(string path)
    {
        if (!OperatingSystem.IsLinux()) return;
        using (var file = File.OpenHandle(path))
            _ = PosixFadvise(file.DangerousGetHandle().ToInt32(), 0, 0, 4 /* POSIX_FADV_DONTNEED */);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var buffer = new byte[8 << 20];
        while (stream.Read(buffer) > 0) { }
    }

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
