// A small standalone SVG line chart, so benchmark modes can write the figures
// the docs embed without a plotting dependency: a title, one polyline with
// point markers per series, linear or logarithmic axes with ticks and labels, a
// legend and a caption line under the plot (machine, date, rounds). Built with
// XElement, so the output is always well-formed XML. Points with a NaN or
// infinite coordinate (or a non-positive one on a log axis) are left out.
using System.Globalization;
using System.Xml.Linq;

namespace Platform.Bench.Plots;

/// <summary>One line of the chart: a name for the legend and its points in data coordinates.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

public sealed class SvgLineChart
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

    private const double Width = 760, Height = 460;
    private const double Left = 80, Right = 24, Top = 48, Bottom = 96;

    public string Title { get; init; } = "";
    /// <summary>Small print under the plot: machine, date, number of rounds; one text line per '\n'.</summary>
    public string Caption { get; init; } = "";
    public string XLabel { get; init; } = "";
    public string YLabel { get; init; } = "";
    public bool LogX { get; init; }
    public bool LogY { get; init; }
    /// <summary>Tick positions on x; default: the points' distinct x values on a log axis, round steps on a linear one.</summary>
    public IReadOnlyList<double>? XTicks { get; init; }
    public List<ChartSeries> Series { get; } = [];

    /// <summary>The chart as an SVG document.</summary>
    public string Render()
    {
        var points = Series.Select(s => s.Points.Where(p => Usable(p.X, LogX) && Usable(p.Y, LogY)).ToList()).ToList();
        var all = points.SelectMany(p => p).ToList();
        var xTicks = (XTicks ?? (LogX ? all.Select(p => p.X).Distinct().Order().ToList() : NiceTicks(all.Select(p => p.X))))
            .Where(x => Usable(x, LogX)).ToList();
        var yTicks = LogY ? LogTicks(all.Select(p => p.Y)) : NiceTicks(all.Select(p => p.Y).Append(0));
        var (x0, x1) = Range(xTicks.Concat(all.Select(p => p.X)), LogX);
        var (y0, y1) = Range(yTicks.Concat(all.Select(p => p.Y)), LogY);
        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        // A margin inside the frame on x, so the first and last points do not sit on it.
        double padX = plotW * 0.04;
        double Px(double x) => Left + padX + (plotW - 2 * padX) * Fraction(x, x0, x1, LogX);
        double Py(double y) => Top + plotH * (1 - Fraction(y, y0, y1, LogY));

        var root = new XElement(Svg + "svg",
            new XAttribute("width", F(Width)), new XAttribute("height", F(Height)),
            new XAttribute("viewBox", $"0 0 {F(Width)} {F(Height)}"),
            new XAttribute("font-family", "sans-serif"), new XAttribute("font-size", "12"),
            new XElement(Svg + "rect", new XAttribute("width", "100%"), new XAttribute("height", "100%"), new XAttribute("fill", "white")),
            Text(Width / 2, 26, Title, "middle", 15),
            new XElement(Svg + "rect", new XAttribute("x", F(Left)), new XAttribute("y", F(Top)), new XAttribute("width", F(plotW)),
                new XAttribute("height", F(plotH)), new XAttribute("fill", "none"), new XAttribute("stroke", "#444")));

        foreach (double t in xTicks)
        {
            double x = Px(t);
            root.Add(Line(x, Top, x, Top + plotH, "#e4e4e4"), Line(x, Top + plotH, x, Top + plotH + 5, "#444"),
                Text(x, Top + plotH + 19, Label(t), "middle"));
        }
        foreach (double t in yTicks)
        {
            double y = Py(t);
            root.Add(Line(Left, y, Left + plotW, y, "#e4e4e4"), Line(Left - 5, y, Left, y, "#444"),
                Text(Left - 8, y + 4, Label(t), "end"));
        }
        root.Add(Text(Left + plotW / 2, Top + plotH + 40, XLabel, "middle", 13));
        var yLabel = Text(18, Top + plotH / 2, YLabel, "middle", 13);
        yLabel.Add(new XAttribute("transform", $"rotate(-90 18 {F(Top + plotH / 2)})"));
        root.Add(yLabel);
        var captionLines = Caption.Split('\n');
        for (int i = 0; i < captionLines.Length; i++)
            root.Add(Text(Left, Height - 10 - 14 * (captionLines.Length - 1 - i), captionLines[i], "start", 11, "#555"));

        for (int i = 0; i < Series.Count; i++)
        {
            string color = Colors[i % Colors.Length];
            var line = new XElement(Svg + "polyline", new XAttribute("fill", "none"), new XAttribute("stroke", color), new XAttribute("stroke-width", "2"),
                new XAttribute("points", string.Join(' ', points[i].Select(p => $"{F(Px(p.X))},{F(Py(p.Y))}"))));
            line.Add(new XAttribute("data-series", Series[i].Name));
            root.Add(line);
            foreach (var p in points[i])
                root.Add(new XElement(Svg + "circle", new XAttribute("cx", F(Px(p.X))), new XAttribute("cy", F(Py(p.Y))), new XAttribute("r", "3.5"),
                    new XAttribute("fill", color)));
            // Legend: top left inside the plot, one row per series.
            double ly = Top + 18 + 18 * i;
            root.Add(new XElement(Svg + "line", new XAttribute("x1", F(Left + 12)), new XAttribute("y1", F(ly)), new XAttribute("x2", F(Left + 36)),
                    new XAttribute("y2", F(ly)), new XAttribute("stroke", color), new XAttribute("stroke-width", "2")),
                Text(Left + 42, ly + 4, Series[i].Name, "start"));
        }
        return new XDocument(new XDeclaration("1.0", "utf-8", null), root).Declaration + "\n" + root + "\n";
    }

    private static bool Usable(double v, bool log) => double.IsFinite(v) && (!log || v > 0);

    private static (double Lo, double Hi) Range(IEnumerable<double> values, bool log)
    {
        var list = values.Where(v => Usable(v, log)).ToList();
        if (list.Count == 0) return log ? (1, 10) : (0, 1);
        double lo = list.Min(), hi = list.Max();
        if (hi > lo) return (lo, hi);
        return log ? (lo / 2, hi * 2) : (lo - 1, hi + 1);
    }

    private static double Fraction(double v, double lo, double hi, bool log) =>
        log ? (Math.Log(v) - Math.Log(lo)) / (Math.Log(hi) - Math.Log(lo)) : (v - lo) / (hi - lo);

    /// <summary>About five round steps (1, 2 or 5 × 10^k) from the smallest to just past the largest value.</summary>
    private static List<double> NiceTicks(IEnumerable<double> values)
    {
        var list = values.Where(double.IsFinite).ToList();
        if (list.Count == 0) return [0, 1];
        double lo = list.Min(), hi = list.Max();
        if (hi <= lo) hi = lo + 1;
        double raw = (hi - lo) / 5, magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1.0, 2, 5, 10 }.Select(m => m * magnitude).First(s => s >= raw);
        var ticks = new List<double>();
        for (double t = Math.Floor(lo / step) * step; t < hi + step * 0.999; t += step) ticks.Add(Math.Round(t / step) * step);
        return ticks;
    }

    /// <summary>1, 2, 5 × 10^k covering the values; decades only when that would be more than ten ticks.</summary>
    private static List<double> LogTicks(IEnumerable<double> values)
    {
        var list = values.Where(v => Usable(v, true)).ToList();
        if (list.Count == 0) return [1, 10];
        int k0 = (int)Math.Floor(Math.Log10(list.Min())), k1 = (int)Math.Ceiling(Math.Log10(list.Max()));
        var ticks = new List<double>();
        for (int k = k0; k <= k1; k++)
            foreach (double m in new[] { 1.0, 2, 5 })
                ticks.Add(m * Math.Pow(10, k));
        // Keep one tick below the smallest value and one above the largest, so the points sit inside the axis.
        double min = list.Min(), max = list.Max();
        int first = Math.Max(0, ticks.FindLastIndex(t => t <= min)), last = ticks.FindIndex(t => t >= max);
        ticks = ticks.GetRange(first, (last < 0 ? ticks.Count - 1 : last) - first + 1);
        return ticks.Count <= 10 ? ticks : ticks.Where(t => Math.Abs(Math.Log10(t) - Math.Round(Math.Log10(t))) < 1e-9).ToList();
    }

    private static string Label(double v) => v.ToString(Math.Abs(v) >= 1 || v == 0 ? "0.##" : "0.###", CultureInfo.InvariantCulture);

    private static string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    private static XElement Line(double x1, double y1, double x2, double y2, string stroke) =>
        new(Svg + "line", new XAttribute("x1", F(x1)), new XAttribute("y1", F(y1)), new XAttribute("x2", F(x2)), new XAttribute("y2", F(y2)),
            new XAttribute("stroke", stroke));

    private static XElement Text(double x, double y, string text, string anchor, int size = 12, string fill = "#000") =>
        new(Svg + "text", new XAttribute("x", F(x)), new XAttribute("y", F(y)), new XAttribute("text-anchor", anchor),
            new XAttribute("font-size", size.ToString(CultureInfo.InvariantCulture)), new XAttribute("fill", fill), text);
}
