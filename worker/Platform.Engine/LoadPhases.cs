// How long each phase of LlmEngine.Load took: loading libtorch, mapping the weights, the tokenizer
// (read on another thread meanwhile), the KV pool and the engine thread. `platform generate
// --timings` prints them beside the process's own start and the first token, and Load logs each at
// Debug, so a slow start is pinned on one phase without a profiler (docs/engine.md, "Start").
using System.Diagnostics;

namespace Platform.Engine;

/// <param name="Name">What the phase did.</param>
/// <param name="Took">Its wall time.</param>
/// <param name="Overlapped">True when it ran on another thread beside the phases around it, so its time is not part of the sum.</param>
public sealed record LoadPhase(string Name, TimeSpan Took, bool Overlapped = false);

/// <summary>Collects <see cref="LoadPhase"/>s on the loading thread: each Mark closes the phase that began at the previous one.</summary>
internal sealed class LoadPhaseClock
{
    private readonly List<LoadPhase> _phases = [];
    private long _since = Stopwatch.GetTimestamp();

    public IReadOnlyList<LoadPhase> Phases => _phases;

    public void Mark(string name)
    {
        long now = Stopwatch.GetTimestamp();
        _phases.Add(new LoadPhase(name, Stopwatch.GetElapsedTime(_since, now)));
        _since = now;
    }

    /// <summary>Records a phase that ran on another thread (its own measured time).</summary>
    public void AddOverlapped(string name, TimeSpan took) => _phases.Add(new LoadPhase(name, took, Overlapped: true));
}
