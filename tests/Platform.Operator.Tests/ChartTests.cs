// What can be checked of the Helm chart without a helm binary (none is installed here, and no
// test pretends to render): every template is YAML once template actions are stripped; every
// pod meets the restricted Pod Security profile; the ClusterRole grants exactly what the
// operator calls (no wildcard, no delete, no secrets: those only by get in rbac-secrets.yaml);
// values.yaml and values.schema.json describe the same keys; image names and tags come only from
// values.yaml; the PodMonitors select the operator's labels; the Grafana dashboard queries only
// the metrics the workers and the router serve.
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;
using Platform.Core.Telemetry;

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
        // Template actions strip to "x": the operator's ClusterRole is "x", the secrets one "x-secrets".
        var clusterRole = docs.Single(d => JsonStr(d, "kind") == "ClusterRole" && JsonStr(d, "metadata", "name") == "x");
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
        // Secrets: nothing here; rbac-secrets.yaml grants the one get per namespace.
        Assert.DoesNotContain(granted, g => g.Contains("/secrets", StringComparison.Ordinal));
        string[] expected =
        [
            "/configmaps:create", "/configmaps:get", "/configmaps:update",
            "/events:create",
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

        var leaseRole = docs.Single(d => JsonStr(d, "kind") == "Role" && JsonStr(d, "metadata", "name") == "x-leader-election");
        var leaseRules = leaseRole["rules"]!.AsArray();
        Assert.Equal(2, leaseRules.Count);
        Assert.All(leaseRules, rule => Assert.Equal(["leases"], rule!["resources"]!.AsArray().Select(r => r!.GetValue<string>())));
        Assert.Equal(["get", "create", "update"], leaseRules[0]!["verbs"]!.AsArray().Select(r => r!.GetValue<string>()));
        // The standby's watch: only on the operator's own Lease.
        Assert.Equal(["list", "watch"], leaseRules[1]!["verbs"]!.AsArray().Select(r => r!.GetValue<string>()));
        Assert.Equal(["x-operator"], leaseRules[1]!["resourceNames"]!.AsArray().Select(r => r!.GetValue<string>()));
    }

    [Fact]
    public void Secrets_are_readable_only_by_get_through_the_secrets_roles()
    {
        var docs = AllDocs();
        var grantsSecrets = docs.Where(d => JsonStr(d, "kind") is "Role" or "ClusterRole"
            && d["rules"]!.AsArray().Any(r => r!["resources"]!.AsArray().Any(x => x!.GetValue<string>() == "secrets"))).ToList();
        // A Role per namespace holding models, or (watching every namespace, none listed) a ClusterRole.
        Assert.Equal(["ClusterRole", "Role"], grantsSecrets.Select(d => JsonStr(d, "kind")!).Order(StringComparer.Ordinal));
        foreach (var role in grantsSecrets)
        {
            Assert.Equal("x-secrets", JsonStr(role, "metadata", "name"));
            var rule = Assert.Single(role["rules"]!.AsArray())!;
            Assert.Equal([""], rule["apiGroups"]!.AsArray().Select(g => g!.GetValue<string>()));
            Assert.Equal(["secrets"], rule["resources"]!.AsArray().Select(g => g!.GetValue<string>()));
            Assert.Equal(["get"], rule["verbs"]!.AsArray().Select(g => g!.GetValue<string>()));
            Assert.NotNull(rule["resourceNames"]);
        }

        var bindings = docs.Where(d => JsonStr(d, "metadata", "name") == "x-secrets" && JsonStr(d, "kind") is "RoleBinding" or "ClusterRoleBinding").ToList();
        Assert.Equal(2, bindings.Count);
        Assert.All(bindings, b => Assert.Equal("x-secrets", JsonStr(b, "roleRef", "name")));

        var template = File.ReadAllText(Path.Combine(Templates, "rbac-secrets.yaml"));
        Assert.Equal(2, Regex.Count(template, @"with \$?\.Values\.secretAccess\.names \}\}\s*\n\s*resourceNames: \{\{ toJson \. \}\}"));
        Assert.Contains("list .Values.operator.watchNamespace", template, StringComparison.Ordinal);
    }

    [Fact]
    public void The_pod_monitors_select_the_operators_workers_and_routers_on_their_http_port()
    {
        var monitors = AllDocs().Where(d => JsonStr(d, "kind") == "PodMonitor").ToList();
        var monitor = Assert.Single(monitors); // one template ranging over the two components
        Assert.Equal("monitoring.coreos.com/v1", JsonStr(monitor, "apiVersion"));
        var labels = monitor["spec"]!["selector"]!["matchLabels"]!;
        Assert.Equal(Names.ManagedBy, JsonStr(labels, Names.ManagedByLabel));
        Assert.Equal(Names.AppName, JsonStr(labels, Names.NameLabel));
        Assert.NotNull(labels[Names.ComponentLabel]);
        var template = File.ReadAllText(Path.Combine(Templates, "podmonitor.yaml"));
        Assert.Contains($"range $component := list \"{Names.WorkerComponent}\" \"{Names.RouterComponent}\"", template, StringComparison.Ordinal);
        Assert.Contains(".Values.metrics.serviceMonitor.enabled", template, StringComparison.Ordinal);
        var endpoint = Assert.Single(monitor["spec"]!["podMetricsEndpoints"]!.AsArray())!;
        Assert.Equal("/metrics", JsonStr(endpoint, "path"));
        Assert.Equal("http", JsonStr(endpoint, "port"));
        Assert.Equal("longcontextmodel", JsonStr(endpoint["relabelings"]![0], "targetLabel"));

        // The operator's pods have a port of that name, the one their /metrics is served on.
        var model = Models.New("m", "ns");
        var children = ChildObjects.Build(model, new ImageDefaults("w", "r"));
        foreach (var pod in new[] { children.Workers.Spec.Template, children.Router.Spec.Template })
        {
            Assert.Contains(pod.Spec.Containers[0].Ports, p => p.Name == "http" && p.ContainerPort == Names.HttpPort);
            Assert.Equal(Names.ManagedBy, pod.Metadata.Labels[Names.ManagedByLabel]);
            Assert.Equal(Names.AppName, pod.Metadata.Labels[Names.NameLabel]);
        }
    }

    [Fact]
    public void Every_operator_setting_the_chart_passes_exists()
    {
        var deployment = File.ReadAllText(Path.Combine(Templates, "deployment.yaml"));
        var settings = Regex.Matches(deployment, @"name: Operator__(\w+)").Select(m => m.Groups[1].Value).ToList();
        Assert.Contains("MonitoringNamespace", settings);
        foreach (var setting in settings)
        {
            Assert.NotNull(typeof(Platform.Operator.Hosting.OperatorOptions).GetProperty(setting));
        }

        Assert.Contains("value: {{ .Values.metrics.monitoringNamespace | quote }}", deployment, StringComparison.Ordinal);
    }

    [Fact]
    public void The_grafana_dashboard_queries_only_the_metrics_workers_and_router_serve()
    {
        // vLLM's names, which the workers serve, and the router's gauges (the autoscaler's contract).
        string[] gauges = [VllmMetricNames.NumRequestsWaiting, VllmMetricNames.NumRequestsRunning, VllmMetricNames.KvCacheUsagePerc, RouterMetricNames.QueuedPrefillTokens, RouterMetricNames.KvUtilization];
        string[] histograms = [VllmMetricNames.TimeToFirstTokenSeconds, VllmMetricNames.InterTokenLatencySeconds, VllmMetricNames.E2eRequestLatencySeconds];
        string[] counters = [VllmMetricNames.PromptTokensTotal, VllmMetricNames.GenerationTokensTotal, VllmMetricNames.PrefixCacheQueriesTotal, VllmMetricNames.PrefixCacheHitsTotal];
        var served = new HashSet<string>(gauges.Concat(counters).Concat(histograms.SelectMany(h => new[] { h + "_bucket", h + "_sum", h + "_count" })), StringComparer.Ordinal);

        var dashboard = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.Chart, "dashboards", "platform.json")))!;
        var expressions = dashboard["panels"]!.AsArray().SelectMany(p => p!["targets"]!.AsArray().Select(t => JsonStr(t, "expr")!))
            .Concat(dashboard["templating"]!["list"]!.AsArray().Where(v => JsonStr(v, "type") == "query").Select(v => JsonStr(v, "query", "query")!))
            .ToList();
        Assert.True(expressions.Count >= 10, $"{expressions.Count} expressions");
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var expr in expressions)
        {
            var names = MetricNames(expr);
            Assert.True(names.Count > 0, $"no metric in '{expr}'");
            foreach (var name in names)
            {
                Assert.True(served.Contains(name), $"the dashboard queries '{name}', which nothing serves: '{expr}'");
                used.Add(name);
            }
        }

        // And every served series has a panel.
        foreach (var metric in gauges.Concat(counters))
        {
            Assert.Contains(metric, used);
        }

        Assert.All(histograms, h => Assert.Contains(h + "_bucket", used));

        var configMap = File.ReadAllText(Path.Combine(Templates, "grafana-dashboard.yaml"));
        Assert.Contains("grafana_dashboard: \"1\"", configMap, StringComparison.Ordinal);
        Assert.Contains(".Files.Get \"dashboards/platform.json\"", configMap, StringComparison.Ordinal);
        Assert.Contains(".Values.metrics.grafanaDashboard.enabled", configMap, StringComparison.Ordinal);
    }

    [Fact]
    public void The_metric_name_extractor_sees_through_promql()
    {
        Assert.Equal(["a:b_bucket", "c_total"], MetricNames("""histogram_quantile(0.95, sum by (le, x) (rate(a:b_bucket{ns=~"$ns", y="rate(z)"}[$__rate_interval]))) / clamp_min(sum without (pod) (c_total offset 5m), 1)""").Order(StringComparer.Ordinal));
        Assert.Equal(["m"], MetricNames("""label_values(m{namespace=~"$namespace"}, longcontextmodel)"""));
    }

    /// <summary>Metric names in a PromQL expression (or a Grafana label_values query): identifiers that are not
    /// functions, keywords, label names in matchers or grouping clauses, durations or strings.</summary>
    internal static List<string> MetricNames(string expr)
    {
        var text = Regex.Replace(expr, "\"(?:[^\"\\\\]|\\\\.)*\"", "\"\"");   // strings
        text = Regex.Replace(text, @"\{[^}]*\}", " ");                              // label matchers
        text = Regex.Replace(text, @"\[[^\]]*\]", " ");                            // range selectors
        text = Regex.Replace(text, @"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " "); // grouping labels
        text = Regex.Replace(text, @"\boffset\s+\S+", " ");
        text = Regex.Replace(text, @"label_values\(([^,]+),[^)]*\)", "$1");          // Grafana: label_values(metric, label)
        var names = new List<string>();
        foreach (Match m in Regex.Matches(text, @"(?<![\w:$.])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])"))
        {
            var rest = text[(m.Index + m.Length)..].TrimStart();
            if (rest.StartsWith('(') || m.Value is "and" or "or" or "unless" or "bool")
            {
                continue;
            }

            names.Add(m.Value);
        }

        return names.Distinct(StringComparer.Ordinal).ToList();
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
