// `platform generate --timings`: where the time from process start to the first token went, printed
// to stderr (stdout stays clean for --json). The runtime's own start (exec of `dotnet` to Main) is the
// process's start time from the kernel (/proc, 10 ms resolution) against the clock at Main; the rest
// are Stopwatch intervals: the command line, each phase of LlmEngine.Load (LoadPhases), the first
// token and the rest of the generation. The process's exit (unmapping the weights, runtime shutdown)
// happens after the last line and is not in it; the bench's start row measures it from outside.
using System.Diagnostics;
using System.Globalization;
using Platform.Engine;

namespace Platform.Cli;

internal sealed class StartTimings
{
    private static long _mainEntered;
    private static TimeSpan? _runtimeStart;
    private readonly List<(string Name, TimeSpan Took, bool Overlapped)> _phases = [];
    private long _since;

    /// <summary>Called first thing in Main: closes the runtime's start.</summary>
    public static void MainEntered()
    {
        _mainEntered = Stopwatch.GetTimestamp();
        try
        {
            using var self = Process.GetCurrentProcess();
            _runtimeStart = DateTime.Now - self.StartTime;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            _runtimeStart = null;
        }
    }

    public StartTimings()
    {
        if (_runtimeStart is { } runtime) _phases.Add(("runtime start (exec to Main)", runtime, false));
        _since = _mainEntered;
        Mark("command line");
    }

    public void Mark(string name)
    {
        long now = Stopwatch.GetTimestamp();
        _phases.Add((name, Stopwatch.GetElapsedTime(_since, now), false));
        _since = now;
    }

    /// <summary>The engine's load phases, ending now.</summary>
    public void AddLoad(IReadOnlyList<LoadPhase> phases)
    {
        foreach (var p in phases) _phases.Add((p.Name, p.Took, p.Overlapped));
        long now = Stopwatch.GetTimestamp();
        var rest = Stopwatch.GetElapsedTime(_since, now) - phases.Where(p => !p.Overlapped).Aggregate(TimeSpan.Zero, (a, p) => a + p.Took);
        _phases.Add(("other load work", rest, false));
        _since = now;
    }

    public void WriteTo(TextWriter writer)
    {
        writer.WriteLine("start phases           took ms     at ms");
        var at = TimeSpan.Zero;
        foreach (var (name, took, overlapped) in _phases)
        {
            if (!overlapped) at += took;
            string label = overlapped ? $"  ({name}, beside the others)" : "  " + name;
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{label,-40} {took.TotalMilliseconds,8:0.0} {(overlapped ? "" : at.TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture)),9}"));
        }
    }
}
