// No container engine runs here, so the operator's Dockerfile is checked statically: every
// COPY source exists in the repository, the published entry assembly is the project's, and the
// image runs as the non-root user the chart expects.
using System.Xml.Linq;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class DockerfileTests
{
    [Fact]
    public void The_operator_dockerfile_copies_existing_paths_and_starts_the_operator_assembly()
    {
        var dockerfile = Path.Combine(RepoPaths.Root, "operator", "Platform.Operator", "Dockerfile");
        var lines = File.ReadAllLines(dockerfile).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        var copies = lines.Where(l => l.StartsWith("COPY ", StringComparison.Ordinal) && !l.Contains("--from=", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(copies);
        foreach (var copy in copies)
        {
            var parts = copy.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..^1];
            Assert.All(parts, source => Assert.True(
                File.Exists(Path.Combine(RepoPaths.Root, source)) || Directory.Exists(Path.Combine(RepoPaths.Root, source)),
                $"COPY source {source} does not exist"));
        }

        var project = Path.Combine(RepoPaths.Root, "operator", "Platform.Operator", "Platform.Operator.csproj");
        var assemblyName = XDocument.Load(project).Descendants("AssemblyName").FirstOrDefault()?.Value ?? Path.GetFileNameWithoutExtension(project);
        Assert.Contains(lines, l => l.StartsWith("ENTRYPOINT", StringComparison.Ordinal) && l.Contains($"\"{assemblyName}.dll\"", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("publish operator/Platform.Operator/Platform.Operator.csproj", StringComparison.Ordinal));
        Assert.Contains("USER 65532:65532", lines);
    }
}
