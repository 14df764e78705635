// The test kubelet expands $(VAR) in args exactly as a node does: defined variables are replaced,
// $$ escapes a dollar, and an undefined reference is left as written.
using Platform.Testing.Kubernetes.Kubelet;

namespace Platform.Operator.Tests.Cluster;

public sealed class KubeletExpansionTests
{
    private static readonly Dictionary<string, string> Env = new() { ["POD_IP"] = "127.0.0.12", ["NS"] = "team-a" };

    [Theory]
    [InlineData("$(POD_IP)", "127.0.0.12")]
    [InlineData("--namespace=$(NS)", "--namespace=team-a")]
    [InlineData("$(MISSING)", "$(MISSING)")]
    [InlineData("$$(POD_IP)", "$(POD_IP)")]
    [InlineData("cost $5", "cost $5")]
    [InlineData("$(NS)-$(POD_IP)", "team-a-127.0.0.12")]
    public void Args_are_expanded_like_a_kubelet(string arg, string expected) => Assert.Equal(expected, PodRuntime.Expand(arg, Env));
}
