// No namespace of our production code may depend, directly or through others,
// on a namespace that depends on it: dependencies run one way (router api →
// forwarding → workers → policies → core; engine → scheduling → KV cache →
// torch helpers; operator hosting → controller → runtime). The graph is read
// from source (NamespaceGraph) and the test names every edge of any cycle it finds, with the files that make it.
using Xunit.Abstractions;

namespace Platform.Core.Tests.Layering;

public sealed class NamespaceCycleTests(ITestOutputHelper output)
{
    /// <summary>Folders of production code (tests and their harnesses are not layered).</summary>
    private static readonly string[] ProductionFolders = ["core", "kvcache", "worker", "router", "cli", "operator", "bench"];

    private static readonly Lazy<NamespaceGraph> Graph = new(() => NamespaceGraph.FromFolders(RepositoryRoot(), ProductionFolders));

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Platform.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no Platform.sln above {AppContext.BaseDirectory}; run the tests from the repository.");
    }

    [Fact]
    public void Production_namespaces_have_no_cycle()
    {
        var graph = Graph.Value;
        output.WriteLine(graph.Describe());
        var cycles = graph.Cycles().ToList();
        Assert.True(cycles.Count == 0, "namespace cycles (break them, e.g. move the shared type to the lower namespace or invert with an interface):\n"
            + string.Join("\n", cycles.Select(c => "{" + string.Join(", ", c) + "}\n" + graph.Describe(c))));
    }

    [Fact]
    public void The_graph_sees_the_edges_that_are_there()
    {
        var graph = Graph.Value;
        Assert.Contains("Platform.Engine.Scheduling", graph.Namespaces);
        Assert.True(graph.DependsOn("Platform.Engine.Scheduling", "Platform.Engine.KvCache"), "the scheduler uses the KV cache manager");
        Assert.True(graph.DependsOn("Platform.Engine", "Platform.Engine.Scheduling"), "LlmEngine uses the scheduler");
        Assert.True(graph.DependsOn("Platform.Operator.Hosting", "Platform.Operator.Controller"), "the host starts the controller");
        Assert.False(graph.DependsOn("Platform.Engine.KvCache", "Platform.Engine.Scheduling"), graph.Describe(["Platform.Engine.KvCache", "Platform.Engine.Scheduling"]));
        Assert.False(graph.DependsOn("Platform.Operator.Controller", "Platform.Operator.Hosting"), graph.Describe(["Platform.Operator.Controller", "Platform.Operator.Hosting"]));
        Assert.True(graph.DependsOn("Platform.Router.Forwarding", "Platform.Router.Workers"), "the forwarder uses the worker directory");
        Assert.False(graph.DependsOn("Platform.Router.Workers", "Platform.Router.Forwarding"), graph.Describe(["Platform.Router.Workers", "Platform.Router.Forwarding"]));
    }

    [Fact]
    public void A_cycle_through_usings_qualified_names_or_enclosing_namespaces_is_found()
    {
        var graph = new NamespaceGraph(new Dictionary<string, string>
        {
            ["a.cs"] = "namespace Platform.A;\nusing Platform.B;\npublic sealed class Alpha { Beta? b; }\n",
            ["b.cs"] = "namespace Platform.B;\npublic sealed class Beta { C.Gamma? g; }\n",
            ["c.cs"] = "namespace Platform.C;\npublic sealed class Gamma { Top? t; }\n",
            ["top.cs"] = "namespace Platform;\npublic sealed class Top { A.Alpha? a; }\n",
            // Text in comments and strings is not code.
            ["d.cs"] = "namespace Platform.D;\n// Platform.A.Alpha\npublic sealed class Delta { string s = \"Platform.A.Alpha\"; string v = @\"Platform.\"\"A\"\".Alpha\"; }\n",
        });
        var cycle = Assert.Single(graph.Cycles());
        Assert.Equal(["Platform", "Platform.A", "Platform.B", "Platform.C"], cycle);
        Assert.False(graph.DependsOn("Platform.D", "Platform.A"));
    }
}
