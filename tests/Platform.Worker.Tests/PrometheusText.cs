// A strict-enough check of the Prometheus text exposition format (version 0.0.4): what a
// scraper needs from the merged /metrics answer (vllm: metrics + OpenTelemetry's).
using System.Globalization;
using System.Text.RegularExpressions;

namespace Platform.Worker.Tests;

internal static partial class PrometheusText
{
    [GeneratedRegex("""^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? \S+( -?\d+)?$""")]
    private static partial Regex Sample();

    /// <summary>Every line is a comment, blank or a sample; each metric family is declared once; no OpenMetrics "# EOF".</summary>
    public static void AssertOneExposition(string text)
    {
        var families = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0) continue;
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var name = line.Split(' ')[2];
                Assert.True(families.Add(name), $"metric family {name} declared twice");
                continue;
            }
            Assert.NotEqual("# EOF", line);
            if (line[0] == '#') continue;
            Assert.Matches(Sample(), line);
            var value = line[(line.LastIndexOf('}') + 1)..].Trim().Split(' ')[0];
            Assert.True(double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _) || value is "+Inf" or "-Inf" or "NaN", $"bad value in: {line}");
        }
    }

    /// <summary>The value of the first sample of <paramref name="name"/> (any labels).</summary>
    public static double Value(string exposition, string name)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal) || line.Length == name.Length || (line[name.Length] != '{' && line[name.Length] != ' ')) continue;
            return double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }
        return double.NaN;
    }
}
