// The benchmark's SVG line chart: well-formed XML, one polyline per series
// with one point per usable data point (NaN and, on a log axis, non-positive
// values left out), and the title, axis labels, legend and caption present.
using System.Xml.Linq;
using Platform.Bench.Plots;

namespace Platform.Bench.Tests;

public class SvgLineChartTests
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void Renders_one_polyline_per_series_with_its_points_and_the_labels(bool logX, bool logY)
    {
        var chart = new SvgLineChart
        {
            Title = "TTFT & friends", XLabel = "prompt length (tokens)", YLabel = "seconds", Caption = "2 cores, one round\nsmall preset", LogX = logX, LogY = logY,
        };
        chart.Series.Add(new ChartSeries("median", [(1024, 0.5), (2048, 1.1), (4096, 2.9), (32000, 95)]));
        chart.Series.Add(new ChartSeries("max <long>", [(1024, 0.7), (2048, double.NaN), (4096, 4.2)]));

        var doc = XDocument.Parse(chart.Render());

        Assert.Equal(Svg + "svg", doc.Root!.Name);
        var lines = doc.Descendants(Svg + "polyline").ToList();
        Assert.Equal(2, lines.Count);
        Assert.Equal([4, 2], lines.Select(l => l.Attribute("points")!.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length));
        Assert.All(lines.SelectMany(l => l.Attribute("points")!.Value.Split(' ')), p => Assert.Equal(2, p.Split(',').Length));
        var texts = doc.Descendants(Svg + "text").Select(t => t.Value).ToList();
        Assert.Contains("TTFT & friends", texts);
        Assert.Contains("prompt length (tokens)", texts);
        Assert.Contains("seconds", texts);
        Assert.Contains("2 cores, one round", texts);
        Assert.Contains("small preset", texts);
        Assert.Contains("median", texts);
        Assert.Contains("max <long>", texts);
        Assert.Contains(logX ? "1024" : "10000", texts); // log x: ticks at the data's x values; linear: round steps
        Assert.True(texts.Count > 10, "tick labels on both axes");
    }

    [Fact]
    public void Log_axis_leaves_out_non_positive_points_and_an_empty_chart_still_renders()
    {
        var chart = new SvgLineChart { LogY = true };
        chart.Series.Add(new ChartSeries("a", [(1, 0), (2, 3), (3, -1)]));
        chart.Series.Add(new ChartSeries("empty", []));

        var doc = XDocument.Parse(chart.Render());

        var lines = doc.Descendants(Svg + "polyline").ToList();
        Assert.Single(lines[0].Attribute("points")!.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal("", lines[1].Attribute("points")!.Value);
    }
}
