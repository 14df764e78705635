// The fake API server's registry of resource types: built-in kinds the operator and kubectl
// touch, plus every CustomResourceDefinition created through the API (registered from the CRD's
// own spec, so printer columns, short names and subresources come from crds/*.yaml). Discovery
// documents (/api, /apis, APIResourceList) are generated from it.
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes;

internal sealed record ScaleSpec(string SpecReplicasPath, string StatusReplicasPath, string? LabelSelectorPath);

internal sealed record PrinterColumn(string Name, string Type, string JsonPath, string Description, int Priority, string? Format);

internal sealed record ResourceType(
    string Group,
    string Version,
    string Plural,
    string Singular,
    string Kind,
    bool Namespaced,
    IReadOnlyList<string> ShortNames,
    bool HasStatus,
    ScaleSpec? Scale,
    IReadOnlyList<PrinterColumn> Columns,
    IReadOnlyList<string> Categories)
{
    public string GroupVersion => Group.Length == 0 ? Version : Group + "/" + Version;

    /// <summary>Identity in the store: group and plural (the version is only a view).</summary>
    public string Key => Group + "/" + Plural;
}

internal sealed class ResourceTypes
{
    private readonly Lock _lock = new();
    private readonly List<ResourceType> _types = [];

    public ResourceTypes()
    {
        var none = Array.Empty<string>();
        var noColumns = Array.Empty<PrinterColumn>();
        _types.Add(new("", "v1", "namespaces", "namespace", "Namespace", false, ["ns"], true, null, noColumns, none));
        _types.Add(new("", "v1", "configmaps", "configmap", "ConfigMap", true, ["cm"], false, null, noColumns, none));
        _types.Add(new("", "v1", "secrets", "secret", "Secret", true, none, false, null, noColumns, none));
        _types.Add(new("", "v1", "services", "service", "Service", true, ["svc"], true, null, noColumns, ["all"]));
        _types.Add(new("", "v1", "pods", "pod", "Pod", true, ["po"], true, null, noColumns, ["all"]));
        _types.Add(new("", "v1", "events", "event", "Event", true, ["ev"], false, null, noColumns, none));
        _types.Add(new("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, ["sa"], false, null, noColumns, none));
        _types.Add(new("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, none, false, null, noColumns, none));
        _types.Add(new("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, none, false, null, noColumns, none));
        _types.Add(new("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, ["sts"], true, new(".spec.replicas", ".status.replicas", null), noColumns, ["all"]));
        _types.Add(new("apps", "v1", "deployments", "deployment", "Deployment", true, ["deploy"], true, new(".spec.replicas", ".status.replicas", null), noColumns, ["all"]));
        _types.Add(new("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, ["pdb"], true, null, noColumns, none));
        _types.Add(new("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, ["netpol"], false, null, noColumns, none));
        _types.Add(new("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, none, false, null, noColumns, none));
        _types.Add(new("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, none, false, null, noColumns, none));
        _types.Add(new("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, ["crd", "crds"], true, null, noColumns, none));
    }

    public static bool IsCrd(ResourceType type) => type.Group == "apiextensions.k8s.io" && type.Plural == "customresourcedefinitions";

    public IReadOnlyList<ResourceType> All
    {
        get
        {
            lock (_lock)
            {
                return [.. _types];
            }
        }
    }

    public ResourceType? Find(string group, string version, string plural)
    {
        lock (_lock)
        {
            return _types.FirstOrDefault(t => t.Group == group && t.Version == version && t.Plural == plural);
        }
    }

    public ResourceType? FindByKey(string key)
    {
        lock (_lock)
        {
            return _types.FirstOrDefault(t => t.Key == key);
        }
    }

    /// <summary>Registers (or re-registers) the served storage version of a CRD object.</summary>
    public ResourceType RegisterCrd(JsonObject crd)
    {
        var spec = crd["spec"]!.AsObject();
        var names = spec["names"]!.AsObject();
        var version = spec["versions"]!.AsArray().Select(v => v!.AsObject()).First(v => v["served"]?.GetValue<bool>() != false);
        var subresources = version["subresources"] as JsonObject;
        ScaleSpec? scale = null;
        if (subresources?["scale"] is JsonObject s)
        {
            scale = new ScaleSpec(s["specReplicasPath"]!.GetValue<string>(), s["statusReplicasPath"]!.GetValue<string>(), s["labelSelectorPath"]?.GetValue<string>());
        }

        var columns = (version["additionalPrinterColumns"] as JsonArray ?? [])
            .Select(c => c!.AsObject())
            .Select(c => new PrinterColumn(
                c["name"]!.GetValue<string>(),
                c["type"]!.GetValue<string>(),
                c["jsonPath"]!.GetValue<string>(),
                c["description"]?.GetValue<string>() ?? "",
                c["priority"]?.GetValue<int>() ?? 0,
                c["format"]?.GetValue<string>()))
            .ToList();
        var type = new ResourceType(
            spec["group"]!.GetValue<string>(),
            version["name"]!.GetValue<string>(),
            names["plural"]!.GetValue<string>(),
            names["singular"]?.GetValue<string>() ?? names["kind"]!.GetValue<string>().ToLowerInvariant(),
            names["kind"]!.GetValue<string>(),
            spec["scope"]?.GetValue<string>() != "Cluster",
            (names["shortNames"] as JsonArray ?? []).Select(n => n!.GetValue<string>()).ToList(),
            subresources?["status"] is not null,
            scale,
            columns,
            (names["categories"] as JsonArray ?? []).Select(n => n!.GetValue<string>()).ToList());
        lock (_lock)
        {
            _types.RemoveAll(t => t.Key == type.Key);
            _types.Add(type);
        }

        return type;
    }

    public void Unregister(string key)
    {
        lock (_lock)
        {
            _types.RemoveAll(t => t.Key == key);
        }
    }

    public static JsonObject ApiVersions(string serverAddress) => new()
    {
        ["kind"] = "APIVersions",
        ["versions"] = new JsonArray("v1"),
        ["serverAddressByClientCIDRs"] = new JsonArray(new JsonObject { ["clientCIDR"] = "0.0.0.0/0", ["serverAddress"] = serverAddress }),
    };

    public JsonObject GroupList()
    {
        var groups = new JsonArray();
        foreach (var group in All.Where(t => t.Group.Length > 0).GroupBy(t => t.Group))
        {
            groups.Add(Group(group.Key));
        }

        return new JsonObject { ["kind"] = "APIGroupList", ["apiVersion"] = "v1", ["groups"] = groups };
    }

    public JsonObject? Group(string name)
    {
        var versions = All.Where(t => t.Group == name).Select(t => t.Version).Distinct().ToList();
        if (versions.Count == 0)
        {
            return null;
        }

        var list = new JsonArray();
        foreach (var v in versions)
        {
            list.Add(new JsonObject { ["groupVersion"] = name + "/" + v, ["version"] = v });
        }

        return new JsonObject
        {
            ["kind"] = "APIGroup",
            ["apiVersion"] = "v1",
            ["name"] = name,
            ["versions"] = list,
            ["preferredVersion"] = new JsonObject { ["groupVersion"] = name + "/" + versions[0], ["version"] = versions[0] },
        };
    }

    public JsonObject? ResourceList(string group, string version)
    {
        var types = All.Where(t => t.Group == group && t.Version == version).ToList();
        if (types.Count == 0)
        {
            return null;
        }

        var resources = new JsonArray();
        foreach (var t in types)
        {
            resources.Add(new JsonObject
            {
                ["name"] = t.Plural,
                ["singularName"] = t.Singular,
                ["namespaced"] = t.Namespaced,
                ["kind"] = t.Kind,
                ["verbs"] = new JsonArray("create", "delete", "get", "list", "patch", "update", "watch"),
                ["shortNames"] = new JsonArray([.. t.ShortNames.Select(n => (JsonNode)n)]),
                ["categories"] = new JsonArray([.. t.Categories.Select(n => (JsonNode)n)]),
            });
            if (t.HasStatus)
            {
                resources.Add(new JsonObject { ["name"] = t.Plural + "/status", ["singularName"] = "", ["namespaced"] = t.Namespaced, ["kind"] = t.Kind, ["verbs"] = new JsonArray("get", "patch", "update") });
            }

            if (t.Scale is not null)
            {
                resources.Add(new JsonObject { ["name"] = t.Plural + "/scale", ["singularName"] = "", ["namespaced"] = t.Namespaced, ["group"] = "autoscaling", ["version"] = "v1", ["kind"] = "Scale", ["verbs"] = new JsonArray("get", "patch", "update") });
            }
        }

        return new JsonObject { ["kind"] = "APIResourceList", ["apiVersion"] = "v1", ["groupVersion"] = types[0].GroupVersion, ["resources"] = resources };
    }
}
