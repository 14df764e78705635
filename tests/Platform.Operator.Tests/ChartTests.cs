// What can be checked of the Helm chart without a helm binary (none is installed here, and no
// test pretends to render): every template is YAML once template actions are stripped; every
// pod meets the restricted Pod Security profile; the ClusterRole grants exactly what the
// operator calls (no wildcard, no delete, secrets only by get); values.yaml and values.schema.json
// describe the same keys; image names and tags come only from values.yaml.
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed partial class ChartTests
{
    private static string Templates => Path.Combine(RepoPaths.Chart, "templates");

    [Fact]
    public void Every_template_is_yaml_once_template_actions_are_stripped()
    {
        var files = Directory.GetFiles(Templates, "*.yaml");
        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            var docs = YamlToJson.Parse(Strip(File.ReadAllText(file)));
            Assert.True(docs.Count > 0, $"{Path.GetFileName(file)} has no YAML document");
            Assert.All(docs, d =>
            {
                Assert.False(string.IsNullOrEmpty(JsonStr(d, "apiVersion")), $"{Path.GetFileName(file)}: apiVersion missing");
                Assert.False(string.IsNullOrEmpty(JsonStr(d, "kind")), $"{Path.GetFileName(file)}: kind missing");
                Assert.NotNull(d["metadata"]?["name"]);
            });
        }

        var chart = YamlToJson.Load(Path.Combine(RepoPaths.Chart, "Chart.yaml"))[0];
        Assert.Equal("platform", JsonStr(chart, "name"));
        Assert.Equal("v2", JsonStr(chart, "apiVersion"));
    }

    [Fact]
    public void Every_pod_in_the_chart_meets_the_restricted_profile()
    {
        var workloads = AllDocs().Where(d => JsonStr(d, "kind") is "Deployment" or "StatefulSet" or "DaemonSet").ToList();
        Assert.Equal(2, workloads.Count);
        foreach (var workload in workloads)
        {
            var pod = workload["spec"]!["template"]!["spec"]!;
            var name = JsonStr(workload, "metadata", "name");
            Assert.True(pod["securityContext"]!["runAsNonRoot"]!.GetValue<bool>(), name);
            Assert.Equal("RuntimeDefault", JsonStr(pod, "securityContext", "seccompProfile", "type"));
            Assert.DoesNotContain(pod["volumes"]?.AsArray() ?? [], v => v!["hostPath"] is not null);
            Assert.Null(pod["hostNetwork"]);
            foreach (var container in pod["containers"]!.AsArray())
            {
                var sc = container!["securityContext"]!;
                Assert.False(sc["allowPrivilegeEscalation"]!.GetValue<bool>(), name);
                Assert.False(sc["privileged"]!.GetValue<bool>(), name);
                Assert.True(sc["runAsNonRoot"]!.GetValue<bool>(), name);
                Assert.Equal(["ALL"], sc["capabilities"]!["drop"]!.AsArray().Select(c => c!.GetValue<string>()));
                Assert.Null(sc["capabilities"]!["add"]);
                Assert.Equal("RuntimeDefault", JsonStr(sc, "seccompProfile", "type"));
            }
        }
    }

    [Fact]
    public void The_operator_role_grants_only_what_the_operator_calls()
    {
        var docs = AllDocs();
        var clusterRole = docs.Single(d => JsonStr(d, "kind") == "ClusterRole");
        var granted = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var rule in clusterRole["rules"]!.AsArray())
        {
            foreach (var group in rule!["apiGroups"]!.AsArray())
            {
                foreach (var resource in rule["resources"]!.AsArray())
                {
                    foreach (var verb in rule["verbs"]!.AsArray())
                    {
                        granted.Add($"{group}/{resource}:{verb}");
                    }
                }
            }
        }

        Assert.DoesNotContain(granted, g => g.Contains('*', StringComparison.Ordinal));
        Assert.DoesNotContain(granted, g => g.EndsWith(":delete", StringComparison.Ordinal) || g.EndsWith(":deletecollection", StringComparison.Ordinal));
        // Secrets: a single get (the Redis password for the KV purge), never list or watch.
        Assert.Equal(["/secrets:get"], granted.Where(g => g.Contains("/secrets", StringComparison.Ordinal)));
        string[] expected =
        [
            "/configmaps:create", "/configmaps:get", "/configmaps:update",
            "/events:create",
            "/secrets:get",
            "/serviceaccounts:create", "/serviceaccounts:get", "/serviceaccounts:update",
            "/services:create", "/services:get", "/services:update",
            "apps/deployments:create", "apps/deployments:get", "apps/deployments:list", "apps/deployments:update", "apps/deployments:watch",
            "apps/statefulsets:create", "apps/statefulsets:get", "apps/statefulsets:list", "apps/statefulsets:update", "apps/statefulsets:watch",
            // Only so the operator may grant the router's Role exactly these (RBAC escalation check).
            "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch",
            "networking.k8s.io/networkpolicies:create", "networking.k8s.io/networkpolicies:get", "networking.k8s.io/networkpolicies:update",
            "policy/poddisruptionbudgets:create", "policy/poddisruptionbudgets:get", "policy/poddisruptionbudgets:update",
            "rbac.authorization.k8s.io/rolebindings:create", "rbac.authorization.k8s.io/rolebindings:get", "rbac.authorization.k8s.io/rolebindings:update",
            "rbac.authorization.k8s.io/roles:create", "rbac.authorization.k8s.io/roles:get", "rbac.authorization.k8s.io/roles:update",
            "serving.longcontext.dev/longcontextmodels/finalizers:update",
            "serving.longcontext.dev/longcontextmodels/scale:get", "serving.longcontext.dev/longcontextmodels/scale:patch", "serving.longcontext.dev/longcontextmodels/scale:update",
            "serving.longcontext.dev/longcontextmodels/status:get", "serving.longcontext.dev/longcontextmodels/status:patch", "serving.longcontext.dev/longcontextmodels/status:update",
            "serving.longcontext.dev/longcontextmodels:get", "serving.longcontext.dev/longcontextmodels:list", "serving.longcontext.dev/longcontextmodels:update", "serving.longcontext.dev/longcontextmodels:watch",
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), granted);

        var leaseRole = docs.Single(d => JsonStr(d, "kind") == "Role");
        var leaseRule = Assert.Single(leaseRole["rules"]!.AsArray())!;
        Assert.Equal(["leases"], leaseRule["resources"]!.AsArray().Select(r => r!.GetValue<string>()));
        Assert.Equal(["get", "create", "update"], leaseRule["verbs"]!.AsArray().Select(r => r!.GetValue<string>()));
    }

    [Fact]
    public void Values_and_values_schema_describe_the_same_keys()
    {
        var values = YamlToJson.Load(Path.Combine(RepoPaths.Chart, "values.yaml"))[0];
        var schema = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.Chart, "values.schema.json")))!.AsObject();
        var problems = new List<string>();
        CompareKeys(values, schema, "", problems);
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void Every_value_is_documented_with_a_comment()
    {
        var lines = File.ReadAllLines(Path.Combine(RepoPaths.Chart, "values.yaml"));
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            if (line.TrimStart().StartsWith('#') || line.TrimStart().StartsWith('-') || string.IsNullOrWhiteSpace(line) || !line.Contains(':', StringComparison.Ordinal))
            {
                continue;
            }

            // A key is documented by a comment right above it, or it belongs to a documented parent
            // group (same comment covers the following sibling keys of one small block).
            var documented = Enumerable.Range(0, i).Reverse().Select(j => lines[j]).TakeWhile(l => !string.IsNullOrWhiteSpace(l)).Any(l => l.TrimStart().StartsWith("# ", StringComparison.Ordinal));
            Assert.True(documented, $"values.yaml line {i + 1} '{line.Trim()}' has no comment");
        }
    }

    [Fact]
    public void Image_names_and_tags_come_only_from_values()
    {
        var values = YamlToJson.Load(Path.Combine(RepoPaths.Chart, "values.yaml"))[0];
        foreach (var key in new[] { "registry", "operator", "worker", "router" })
        {
            Assert.False(string.IsNullOrEmpty(JsonStr(values, "image", key)), key);
        }

        var deployment = File.ReadAllText(Path.Combine(Templates, "deployment.yaml"));
        Assert.Contains("(list . .Values.image.operator)", deployment, StringComparison.Ordinal);
        Assert.Contains("(list . .Values.image.worker)", deployment, StringComparison.Ordinal);
        Assert.Contains("(list . .Values.image.router)", deployment, StringComparison.Ordinal);
        foreach (var file in Directory.GetFiles(Templates, "*.yaml"))
        {
            foreach (var line in File.ReadLines(file).Where(l => l.TrimStart().StartsWith("image:", StringComparison.Ordinal)))
            {
                Assert.Contains("{{", line, StringComparison.Ordinal);
            }
        }
    }

    /// <summary>Drops lines that hold only template actions and replaces inline actions with a scalar.</summary>
    internal static string Strip(string template)
    {
        var kept = template.Split('\n').Where(l => !ActionOnlyLine().IsMatch(l));
        return InlineAction().Replace(string.Join('\n', kept), "x");
    }

    private static List<JsonObject> AllDocs() =>
        Directory.GetFiles(Templates, "*.yaml").SelectMany(f => YamlToJson.Parse(Strip(File.ReadAllText(f)))).ToList();

    private static void CompareKeys(JsonObject values, JsonObject schema, string path, List<string> problems)
    {
        var props = schema["properties"] as JsonObject;
        if (props is null)
        {
            return;
        }

        foreach (var (key, value) in values)
        {
            if (props[key] is not JsonObject child)
            {
                problems.Add($"{path}.{key}: in values.yaml, not in values.schema.json");
                continue;
            }

            if (value is JsonObject nested)
            {
                CompareKeys(nested, child, path + "." + key, problems);
            }
        }

        foreach (var (key, _) in props)
        {
            if (!values.ContainsKey(key))
            {
                problems.Add($"{path}.{key}: in values.schema.json, not in values.yaml");
            }
        }
    }

    private static string? JsonStr(JsonNode? node, params string[] path)
    {
        foreach (var part in path)
        {
            node = node?[part];
        }

        return node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    }

    [GeneratedRegex(@"^\s*(\{\{-?.*?-?\}\}\s*)+$")]
    private static partial Regex ActionOnlyLine();

    [GeneratedRegex(@"\{\{-?.*?-?\}\}")]
    private static partial Regex InlineAction();
}
