// One source of truth: crds/longcontextmodels.yaml and the C# types in Api/ must agree on every
// field name, JSON type, required marker and default value; the sample must parse into the C#
// types and pass the operator's validator; the chart ships the same CRD byte for byte.
using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using k8s;
using Platform.Core.Models.Hub;
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;
using YamlDotNet.RepresentationModel;

namespace Platform.Operator.Tests;

public sealed class CrdSchemaTests
{
    [Fact]
    public void Crd_schema_and_csharp_types_agree()
    {
        var crd = YamlToJson.Load(RepoPaths.Crd)[0];
        var version = crd["spec"]!["versions"]![0]!;
        var root = version["schema"]!["openAPIV3Schema"]!.AsObject();
        var problems = new List<string>();
        Compare(typeof(LongContextModel), root, "", problems, checkDefaults: true);
        Assert.True(problems.Count == 0, "CRD and C# types differ:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void Crd_names_and_subresources_match_the_constants()
    {
        var spec = YamlToJson.Load(RepoPaths.Crd)[0]["spec"]!;
        Assert.Equal(LongContextModel.Group, spec["group"]!.GetValue<string>());
        Assert.Equal(LongContextModel.Plural, spec["names"]!["plural"]!.GetValue<string>());
        Assert.Equal(LongContextModel.KindName, spec["names"]!["kind"]!.GetValue<string>());
        Assert.Equal(LongContextModel.ShortName, spec["names"]!["shortNames"]![0]!.GetValue<string>());
        var version = spec["versions"]![0]!;
        Assert.Equal(LongContextModel.Version, version["name"]!.GetValue<string>());
        var scale = version["subresources"]!["scale"]!;
        Assert.Equal(".spec.replicas", scale["specReplicasPath"]!.GetValue<string>());
        Assert.Equal(".status.selector", scale["labelSelectorPath"]!.GetValue<string>());
        Assert.NotNull(version["subresources"]!["status"]);
    }

    [Fact]
    public void The_sample_parses_into_the_csharp_types_and_is_valid()
    {
        var model = KubernetesYaml.Deserialize<LongContextModel>(File.ReadAllText(RepoPaths.Sample));
        Assert.Equal("qwen-1m", model.Metadata.Name);
        Assert.Equal(1_048_576, model.Spec.Model.MaxContextTokens);
        Assert.Equal(1, model.Spec.Worker.Resources.Gpus);
        Assert.Equal("nvidia.com/gpu", model.Spec.Worker.Tolerations![0].Key);
        Assert.True(model.Spec.KvCache.DistAttention.Enabled);
        Assert.Empty(SpecValidator.Validate(model.Spec));
    }

    [Fact]
    public void Hub_sources_are_admitted_in_the_form_the_parser_accepts_and_hub_fields_need_one()
    {
        var modelSchema = YamlToJson.Load(RepoPaths.Crd)[0]["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!
            ["properties"]!["spec"]!["properties"]!["model"]!;
        var sourceRule = Assert.Single(modelSchema["properties"]!["source"]!["x-kubernetes-validations"]!.AsArray())!;
        // The CEL rule checks the form; no refusal of the scheme is left.
        var pattern = System.Text.RegularExpressions.Regex.Match(sourceRule["rule"]!.GetValue<string>(), "matches\\('(.+)'\\)").Groups[1].Value;
        foreach (var ok in new[] { "hf://Qwen/Qwen2.5-7B-Instruct-1M", "hf://acme/tiny@v1.0", "hf://gpt2" })
        {
            Assert.Matches(pattern, ok);
            HubModelReference.Parse(ok);
        }
        foreach (var bad in new[] { "hf://", "hf://a/b/c", "hf://a b/c" })
        {
            Assert.DoesNotMatch(pattern, bad);
            Assert.Throws<ArgumentException>(() => HubModelReference.Parse(bad));
        }
        var fieldsRule = Assert.Single(modelSchema["x-kubernetes-validations"]!.AsArray())!;
        // One message for both gates: the API server's CEL rule and the operator's re-check.
        Assert.Equal(SpecValidator.HubFieldsNeedHubSource, fieldsRule["message"]!.GetValue<string>());

        var spec = new LongContextModelSpec { Model = new ModelSpec { Source = "hf://Qwen/Qwen2.5-7B-Instruct-1M", ServedName = "q", HubTokenSecret = "hf", HubEndpoint = "https://mirror.example/", CacheClaim = "hf-cache" } };
        Assert.Empty(SpecValidator.Validate(spec));
        spec.Model.Source = "hf://a/b/c";
        Assert.Contains("hf://ORG/NAME", Assert.Single(SpecValidator.Validate(spec)), StringComparison.Ordinal);
        spec.Model.Source = "hf://a/b";
        spec.Model.HubEndpoint = "mirror.example";
        Assert.Contains("hubEndpoint", Assert.Single(SpecValidator.Validate(spec)), StringComparison.Ordinal);
        spec.Model.Source = "file:///models/q";
        spec.Model.HubEndpoint = null;
        Assert.Contains(SpecValidator.HubFieldsNeedHubSource, Assert.Single(SpecValidator.Validate(spec)), StringComparison.Ordinal);
        spec.Model.HubTokenSecret = spec.Model.CacheClaim = null;
        Assert.Empty(SpecValidator.Validate(spec));
    }

    [Fact]
    public void The_chart_ships_the_same_crd()
    {
        Assert.Equal(File.ReadAllText(RepoPaths.Crd), File.ReadAllText(Path.Combine(RepoPaths.Chart, "crds", "longcontextmodels.yaml")));
    }

    private static void Compare(Type type, JsonObject schema, string path, List<string> problems, bool checkDefaults)
    {
        var props = schema["properties"] as JsonObject ?? [];
        var csProps = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (Property: p, Name: p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name))
            .Where(p => p.Name is not null)
            .ToDictionary(p => p.Name!, p => p.Property, StringComparer.Ordinal);
        foreach (var missing in props.Select(p => p.Key).Except(csProps.Keys))
        {
            problems.Add($"{path}.{missing}: in the CRD, not in {type.Name}");
        }

        foreach (var missing in csProps.Keys.Except(props.Select(p => p.Key)))
        {
            problems.Add($"{path}.{missing}: in {type.Name}, not in the CRD");
        }

        var required = (schema["required"] as JsonArray ?? []).Select(r => r!.GetValue<string>()).Order(StringComparer.Ordinal);
        var csRequired = csProps.Where(p => p.Value.GetCustomAttribute<SchemaRequiredAttribute>() is not null || (path.Length == 0 && p.Key == "spec")).Select(p => p.Key).Order(StringComparer.Ordinal);
        if (!required.SequenceEqual(csRequired))
        {
            problems.Add($"{path}: required [{string.Join(",", required)}] in the CRD, [{string.Join(",", csRequired)}] in {type.Name}");
        }

        var instance = Activator.CreateInstance(type);
        foreach (var (name, property) in csProps)
        {
            if (props[name] is not JsonObject propSchema)
            {
                continue;
            }

            var here = path + "." + name;
            var propType = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            var expected = JsonType(propType);
            var actual = propSchema["type"]?.GetValue<string>();
            if (expected != actual)
            {
                problems.Add($"{here}: type {actual} in the CRD, {expected} ({propType.Name}) in C#");
                continue;
            }

            var value = property.GetValue(instance);
            var isRequired = property.GetCustomAttribute<SchemaRequiredAttribute>() is not null;
            if (isRequired && propSchema["default"] is not null)
            {
                problems.Add($"{here}: required, so it must have no default");
            }
            else if (checkDefaults && !isRequired && name != "status" && path.Length > 0)
            {
                CompareDefault(here, propType, value, propSchema["default"], problems);
            }

            if (IsOurs(propType))
            {
                Compare(propType, propSchema, here, problems, checkDefaults && name != "status");
            }
            else if (propType.IsGenericType && propType.GetGenericTypeDefinition() == typeof(IList<>))
            {
                var item = propType.GetGenericArguments()[0];
                var itemSchema = propSchema["items"] as JsonObject;
                if (itemSchema?["type"]?.GetValue<string>() != JsonType(item))
                {
                    problems.Add($"{here}[]: item type differs");
                }
                else if (IsOurs(item))
                {
                    Compare(item, itemSchema, here + "[]", problems, checkDefaults);
                }
            }
            else if (propType.IsGenericType && propType.GetGenericTypeDefinition() == typeof(IDictionary<,>)
                && propSchema["additionalProperties"]?["type"]?.GetValue<string>() != JsonType(propType.GetGenericArguments()[1]))
            {
                problems.Add($"{here}: map value type differs");
            }
        }
    }

    private static void CompareDefault(string path, Type type, object? value, JsonNode? schemaDefault, List<string> problems)
    {
        string? csDefault = value switch
        {
            null => null,
            string s when s.Length == 0 => null,
            string s => s,
            bool b => b ? "true" : "false",
            double d => d.ToString(CultureInfo.InvariantCulture),
            int or long => Convert.ToString(value, CultureInfo.InvariantCulture),
            IEnumerable => null,
            _ when IsOurs(type) => "{}",
            _ => null,
        };
        var yamlDefault = schemaDefault switch
        {
            null => null,
            JsonObject o when o.Count == 0 => "{}",
            JsonValue v when v.TryGetValue<bool>(out var b) => b ? "true" : "false",
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonValue v when v.TryGetValue<long>(out var l) => l.ToString(CultureInfo.InvariantCulture),
            JsonValue v => v.GetValue<double>().ToString(CultureInfo.InvariantCulture),
            _ => schemaDefault.ToJsonString(),
        };
        if (csDefault != yamlDefault)
        {
            problems.Add($"{path}: default {yamlDefault ?? "(none)"} in the CRD, {csDefault ?? "(none)"} in C#");
        }
    }

    private static bool IsOurs(Type type) => type.Namespace == typeof(LongContextModel).Namespace && type.IsClass;

    private static string JsonType(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type == typeof(string))
        {
            return "string";
        }

        if (type == typeof(int) || type == typeof(long))
        {
            return "integer";
        }

        if (type == typeof(double))
        {
            return "number";
        }

        if (type == typeof(bool))
        {
            return "boolean";
        }

        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IList<>))
        {
            return "array";
        }

        return "object";
    }
}

/// <summary>Reads YAML documents into System.Text.Json nodes, typing plain scalars as YAML 1.2's core schema does.</summary>
public static class YamlToJson
{
    public static List<JsonObject> Load(string path) => Parse(File.ReadAllText(path));

    public static List<JsonObject> Parse(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return stream.Documents.Where(d => d.RootNode is YamlMappingNode).Select(d => Convert(d.RootNode)!.AsObject()).ToList();
    }

    private static JsonNode? Convert(YamlNode node) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(kv => KeyValuePair.Create(((YamlScalarNode)kv.Key).Value!, Convert(kv.Value)))),
        YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(Convert)]),
        YamlScalarNode scalar => Scalar(scalar),
        _ => null,
    };

    private static JsonValue? Scalar(YamlScalarNode scalar)
    {
        var value = scalar.Value ?? "";
        if (scalar.Style is YamlDotNet.Core.ScalarStyle.SingleQuoted or YamlDotNet.Core.ScalarStyle.DoubleQuoted or YamlDotNet.Core.ScalarStyle.Literal or YamlDotNet.Core.ScalarStyle.Folded)
        {
            return JsonValue.Create(value);
        }

        return value switch
        {
            "null" or "~" or "" => null,
            "true" => JsonValue.Create(true),
            "false" => JsonValue.Create(false),
            _ when long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => JsonValue.Create(l),
            _ when double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => JsonValue.Create(d),
            _ => JsonValue.Create(value),
        };
    }
}
