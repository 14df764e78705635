// No container engine runs here, so the three Dockerfiles (operator, router, worker) are checked
// statically: multi-stage (SDK build, runtime image without the SDK); every COPY source exists and
// together they hold every project the published one references (so the build inside the image
// has its sources); the published project is in Platform.sln and the entry assembly is its own;
// a non-root user matching the pods' runAsUser; EXPOSE and HEALTHCHECK on the ports and health
// endpoint the operator's probes use; the worker built with the CUDA TorchSharp backend on a CUDA
// runtime base. And the chart names each image once, in values.yaml, under the same repository
// names the operator defaults to.
using System.Text.Json.Nodes;
using System.Xml.Linq;
using Platform.Operator.Builders;
using Platform.Operator.Hosting;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class DockerfileTests
{
    public static TheoryData<string, string, string> Images => new()
    {
        // Dockerfile folder, project file, key under image: in values.yaml
        { "operator/Platform.Operator", "operator/Platform.Operator/Platform.Operator.csproj", "operator" },
        { "router/Platform.Router", "router/Platform.Router/Platform.Router.csproj", "router" },
        { "worker/Platform.Worker", "worker/Platform.Worker/Platform.Worker.csproj", "worker" },
    };

    /// <summary>Instructions with line continuations joined and comments dropped.</summary>
    private static List<string> Instructions(string dockerfile)
    {
        var result = new List<string>();
        var current = "";
        foreach (var raw in File.ReadAllLines(dockerfile))
        {
            var line = raw.Trim();
            if (line.StartsWith('#') || (line.Length == 0 && current.Length == 0)) continue;
            if (line.EndsWith('\\'))
            {
                current += line[..^1].Trim() + " ";
                continue;
            }

            result.Add((current + line).Trim());
            current = "";
        }

        return result.Where(l => l.Length > 0).ToList();
    }

    private static string AssemblyName(string project) =>
        XDocument.Load(Path.Combine(RepoPaths.Root, project)).Descendants("AssemblyName").FirstOrDefault()?.Value ?? Path.GetFileNameWithoutExtension(project);

    /// <summary>The project and every project it references, transitively, as repository-relative paths.</summary>
    private static SortedSet<string> ProjectClosure(string project)
    {
        var seen = new SortedSet<string>(StringComparer.Ordinal);
        var pending = new Stack<string>([Path.GetFullPath(Path.Combine(RepoPaths.Root, project))]);
        while (pending.TryPop(out var full))
        {
            if (!seen.Add(Path.GetRelativePath(RepoPaths.Root, full).Replace('\\', '/'))) continue;
            foreach (var reference in XDocument.Load(full).Descendants("ProjectReference"))
                pending.Push(Path.GetFullPath(Path.Combine(Path.GetDirectoryName(full)!, reference.Attribute("Include")!.Value)));
        }

        return seen;
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void Each_dockerfile_builds_its_project_from_existing_sources_and_starts_its_assembly(string folder, string project, string valuesKey)
    {
        _ = valuesKey;
        var lines = Instructions(Path.Combine(RepoPaths.Root, folder, "Dockerfile"));

        var froms = lines.Where(l => l.StartsWith("FROM ", StringComparison.Ordinal)).ToList();
        Assert.True(froms.Count >= 2, "multi-stage: an SDK build stage and a runtime stage");
        Assert.StartsWith("FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build", froms[0], StringComparison.Ordinal);
        Assert.DoesNotContain("/sdk:", froms[^1], StringComparison.Ordinal);

        var sources = new List<string>();
        foreach (var copy in lines.Where(l => l.StartsWith("COPY ", StringComparison.Ordinal) && !l.Contains("--from=", StringComparison.Ordinal)))
        {
            var parts = copy.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..^1];
            foreach (var source in parts)
            {
                Assert.True(File.Exists(Path.Combine(RepoPaths.Root, source)) || Directory.Exists(Path.Combine(RepoPaths.Root, source)), $"COPY source {source} does not exist");
                sources.Add(source.TrimEnd('/'));
            }
        }

        Assert.Contains("Directory.Build.props", sources);
        Assert.Contains("Directory.Packages.props", sources);
        foreach (var needed in ProjectClosure(project))
        {
            Assert.True(sources.Any(s => needed.StartsWith(s + "/", StringComparison.Ordinal)), $"{folder}/Dockerfile copies no folder holding {needed}");
        }

        var solution = File.ReadAllText(Path.Combine(RepoPaths.Root, "Platform.sln")).Replace('\\', '/');
        Assert.Contains(project, solution, StringComparison.Ordinal);
        Assert.Contains(lines, l => l.StartsWith("RUN dotnet publish " + project + " ", StringComparison.Ordinal));
        var entrypoint = Assert.Single(lines, l => l.StartsWith("ENTRYPOINT", StringComparison.Ordinal));
        Assert.Equal($"ENTRYPOINT [\"dotnet\", \"{AssemblyName(project)}.dll\"]", entrypoint);

        // The pods run as 65532 (ChildObjects and the chart); the image must not need root.
        Assert.Equal("USER 65532:65532", lines.Last(l => l.StartsWith("USER ", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData("router/Platform.Router", new[] { Names.HttpPort })]
    [InlineData("worker/Platform.Worker", new[] { Names.WorkerGrpcPort, Names.HttpPort })]
    public void Router_and_worker_images_expose_the_probed_ports_and_check_the_liveness_endpoint(string folder, int[] ports)
    {
        var lines = Instructions(Path.Combine(RepoPaths.Root, folder, "Dockerfile"));
        var exposed = Assert.Single(lines, l => l.StartsWith("EXPOSE ", StringComparison.Ordinal)).Split(' ')[1..].Select(int.Parse).Order();
        Assert.Equal(ports.Order(), exposed);
        // The operator probes liveness at /healthz on the HTTP port; the image's HEALTHCHECK asks the same.
        var health = Assert.Single(lines, l => l.StartsWith("HEALTHCHECK ", StringComparison.Ordinal));
        Assert.Contains($"/dev/tcp/127.0.0.1/{Names.HttpPort}", health, StringComparison.Ordinal);
        Assert.Contains("GET /healthz ", health, StringComparison.Ordinal);
        Assert.Contains(" 200 ", health, StringComparison.Ordinal);
    }

    [Fact]
    public void The_worker_image_uses_the_cuda_torch_backend_on_a_cuda_runtime_base()
    {
        var lines = Instructions(Path.Combine(RepoPaths.Root, "worker", "Platform.Worker", "Dockerfile"));
        Assert.Contains(lines, l => l.StartsWith("RUN dotnet publish ", StringComparison.Ordinal) && l.Contains(" -p:TorchBackend=cuda ", StringComparison.Ordinal));
        Assert.Matches(@"^FROM nvidia/cuda:[0-9.]+-(cudnn-)?runtime-", lines.Last(l => l.StartsWith("FROM ", StringComparison.Ordinal)));
        // The switch exists where the build reads it.
        var engine = File.ReadAllText(Path.Combine(RepoPaths.Root, "worker", "Platform.Engine", "Platform.Engine.csproj"));
        Assert.Contains("'$(TorchBackend)' == 'cuda'", engine, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void Each_image_is_named_once_in_the_chart_values(string folder, string project, string valuesKey)
    {
        _ = folder;
        var values = YamlToJson.Load(Path.Combine(RepoPaths.Chart, "values.yaml"))[0];
        var image = values["image"]!.AsObject();
        var repository = image[valuesKey]!.GetValue<string>();
        var registry = image["registry"]!.GetValue<string>();
        if (valuesKey != "operator")
        {
            // The router and worker repositories are named after the assembly they run.
            Assert.Equal(AssemblyName(project), repository);
        }

        // The operator's built-in defaults (used without the chart) point at the same repositories.
        var defaults = new OperatorOptions();
        var fallback = valuesKey switch { "worker" => defaults.WorkerImage, "router" => defaults.RouterImage, _ => null };
        if (fallback is not null) Assert.StartsWith($"{registry}/{repository}:", fallback, StringComparison.Ordinal);

        // No template spells the repository out: it only comes through the image helper from values.
        foreach (var file in Directory.GetFiles(Path.Combine(RepoPaths.Chart, "templates")))
        {
            Assert.DoesNotContain(registry + "/", File.ReadAllText(file), StringComparison.Ordinal);
            Assert.DoesNotContain(repository + ":", File.ReadAllText(file), StringComparison.Ordinal);
        }

        Assert.IsAssignableFrom<JsonValue>(image["tag"]);
    }
}
