// The two PNG charts of `bench engine`'s context sweep, drawn with ScottPlot:
//  * decode tokens/s against context, one line per preset and batch, each with its bandwidth bound as a
//    dashed line of the same colour (decode at the bound would read weights and KV at the measured
//    streaming rate), and llama.cpp's decode of the same cell as a dotted line when the run measured it
//    (`--peer-llamacpp` with cells);
//  * prefill GFLOP/s (weight and attention FLOPs) against context, with the fp32 matmul rate measured in
//    the same run as a horizontal line: what prefill could reach if every FLOP ran at the GEMM rate.
// Contexts grow by powers of two, so x is log2(context) with the contexts as tick labels.
using ScottPlot;

namespace Platform.Bench.Plots;

/// <summary>One point of the sweep: decode and its bound, and prefill GFLOP/s when it was measured.</summary>
internal sealed record SweepPoint(string Preset, int Batch, int Context, double DecodeTokensPerSecond, double DecodeBoundTokensPerSecond, double? PrefillGflopsPerSecond,
    double? PeerDecodeTokensPerSecond = null);

internal static class EngineSweepPlots
{
    public static void WriteDecode(string path, IReadOnlyList<SweepPoint> points, string caption)
    {
        bool peer = points.Any(p => p.PeerDecodeTokensPerSecond is not null);
        using var plot = NewPlot(peer ? "Decode tokens/s against context (dashed: bound; dotted: llama.cpp)" : "Decode tokens/s against context (dashed: bandwidth bound)",
            "decode tokens/s", points, caption);
        int colour = 0;
        foreach (var group in points.GroupBy(p => (p.Preset, p.Batch)))
        {
            var line = group.OrderBy(p => p.Context).ToList();
            var color = plot.Add.Palette.GetColor(colour++);
            var measured = plot.Add.Scatter(line.Select(p => Math.Log2(p.Context)).ToArray(), line.Select(p => p.DecodeTokensPerSecond).ToArray(), color);
            measured.LegendText = $"{group.Key.Preset}, batch {group.Key.Batch}";
            var bound = plot.Add.Scatter(line.Select(p => Math.Log2(p.Context)).ToArray(), line.Select(p => p.DecodeBoundTokensPerSecond).ToArray(), color);
            bound.LinePattern = LinePattern.Dashed;
            bound.MarkerSize = 0;
            bound.LegendText = $"{group.Key.Preset}, batch {group.Key.Batch}: bound";
            var theirs = line.Where(p => p.PeerDecodeTokensPerSecond is not null).ToList();
            if (theirs.Count == 0) continue;
            var llamaCpp = plot.Add.Scatter(theirs.Select(p => Math.Log2(p.Context)).ToArray(), theirs.Select(p => p.PeerDecodeTokensPerSecond!.Value).ToArray(), color);
            llamaCpp.LinePattern = LinePattern.Dotted;
            llamaCpp.LegendText = $"{group.Key.Preset}, batch {group.Key.Batch}: llama.cpp";
        }
        plot.Axes.SetLimitsY(0, points.Select(p => Math.Max(p.DecodeTokensPerSecond, p.DecodeBoundTokensPerSecond)).DefaultIfEmpty(1).Max() * 1.1);
        plot.SavePng(path, 900, 560);
    }

    public static void WritePrefill(string path, IReadOnlyList<SweepPoint> points, double matmulGflops, string caption)
    {
        var measuredPoints = points.Where(p => p.PrefillGflopsPerSecond is not null).ToList();
        using var plot = NewPlot("Prefill GFLOP/s against context (weight + attention FLOPs)", "GFLOP/s", measuredPoints, caption);
        int colour = 0;
        foreach (var group in measuredPoints.GroupBy(p => (p.Preset, p.Batch)))
        {
            var line = group.OrderBy(p => p.Context).ToList();
            var scatter = plot.Add.Scatter(line.Select(p => Math.Log2(p.Context)).ToArray(), line.Select(p => p.PrefillGflopsPerSecond!.Value).ToArray(),
                plot.Add.Palette.GetColor(colour++));
            scatter.LegendText = $"{group.Key.Preset}, batch {group.Key.Batch}";
        }
        var rate = plot.Add.HorizontalLine(matmulGflops);
        rate.LinePattern = LinePattern.Dashed;
        rate.LegendText = $"fp32 matmul rate, same run ({matmulGflops:F0} GFLOP/s)";
        plot.Axes.SetLimitsY(0, Math.Max(matmulGflops, measuredPoints.Select(p => p.PrefillGflopsPerSecond!.Value).DefaultIfEmpty(0).Max()) * 1.1);
        plot.SavePng(path, 900, 560);
    }

    private static Plot NewPlot(string title, string yLabel, IReadOnlyList<SweepPoint> points, string caption)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("context tokens\n" + caption);
        plot.YLabel(yLabel);
        var contexts = points.Select(p => p.Context).Distinct().Order().ToArray();
        plot.Axes.Bottom.SetTicks(contexts.Select(c => Math.Log2(c)).ToArray(), contexts.Select(c => c.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.ShowLegend(Alignment.UpperRight);
        return plot;
    }
}
