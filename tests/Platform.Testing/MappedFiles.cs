// How much of a file this process has mapped into memory right now, from /proc/self/smaps: the
// tests of memory-mapped weights (what stays resident after a copy, what population maps) read
// it the same way.
using System.Globalization;
using System.Text.RegularExpressions;

namespace Platform.Testing;

public static partial class MappedFiles
{
    [GeneratedRegex("^[0-9a-f]+-[0-9a-f]+ ")]
    private static partial Regex MapHeader();

    /// <summary>Resident bytes of this process's maps of <paramref name="path"/> (Linux; 0 when nothing maps it).</summary>
    public static long ResidentBytes(string path)
    {
        long total = 0;
        bool inMap = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (MapHeader().IsMatch(line)) inMap = fields.Length >= 6 && string.Join(' ', fields[5..]) == path;
            else if (inMap && fields[0] == "Rss:") total += long.Parse(fields[1], CultureInfo.InvariantCulture) * 1024;
        }
        return total;
    }
}
