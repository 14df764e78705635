// Resident memory of another process from /proc/PID/status, for the benchmarks that report it
// (longprompt's peaks, soak's samples over time). NaN when the process is gone or unreadable.
using System.Globalization;

namespace Platform.Bench.Processes;

internal static class ProcessMemory
{
    /// <summary>VmRSS: the resident set now, in MB.</summary>
    public static double RssMb(int pid) => ReadMb(pid, "VmRSS:");

    /// <summary>VmHWM: the peak resident set, in MB.</summary>
    public static double PeakRssMb(int pid) => ReadMb(pid, "VmHWM:");

    private static double ReadMb(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith(field, StringComparison.Ordinal))
                    return long.Parse(line[field.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
        }
        catch (IOException)
        {
            // Gone, or not Linux.
        }
        catch (UnauthorizedAccessException)
        {
            // Not ours to read.
        }
        return double.NaN;
    }
}
