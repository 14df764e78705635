// Small JSON utilities of the fake API server: RFC 7386 merge patch, simple JSONPath
// (".a.b.c" as printer columns and scale paths use), label selectors (=, ==, !=, in, notin,
// exists, !exists) and the metadata.name / metadata.namespace field selectors.
using System.Text.Json.Nodes;

namespace Platform.Testing.Kubernetes;

internal static class JsonTools
{
    /// <summary>RFC 7386: objects merge recursively, null deletes, anything else replaces.</summary>
    public static JsonNode? MergePatch(JsonNode? target, JsonNode? patch)
    {
        if (patch is not JsonObject patchObject)
        {
            return patch?.DeepClone();
        }

        var result = target is JsonObject t ? t.DeepClone().AsObject() : new JsonObject();
        foreach (var (key, value) in patchObject)
        {
            if (value is null)
            {
                result.Remove(key);
            }
            else
            {
                result[key] = MergePatch(result[key], value);
            }
        }

        return result;
    }

    public static JsonNode? Get(JsonNode? node, string path)
    {
        foreach (var part in path.TrimStart('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            node = (node as JsonObject)?[part];
        }

        return node;
    }

    public static void Set(JsonObject root, string path, JsonNode? value)
    {
        var parts = path.TrimStart('.').Split('.', StringSplitOptions.RemoveEmptyEntries);
        var node = root;
        foreach (var part in parts[..^1])
        {
            if (node[part] is not JsonObject child)
            {
                child = new JsonObject();
                node[part] = child;
            }

            node = child;
        }

        node[parts[^1]] = value;
    }

    /// <summary>A JSON integer whether it was parsed from text or set from an int or a long.</summary>
    public static long Long(JsonNode? node) =>
        node is JsonValue v ? (v.TryGetValue<long>(out var l) ? l : v.TryGetValue<int>(out var i) ? i : (long)v.GetValue<double>()) : 0;

    public static string? Str(JsonNode? node, string path) => Get(node, path) is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    public static Func<JsonObject, bool> ParseLabelSelector(string? selector)
    {
        if (string.IsNullOrWhiteSpace(selector))
        {
            return _ => true;
        }

        var requirements = new List<Func<IReadOnlyDictionary<string, string>, bool>>();
        foreach (var raw in SplitTopLevel(selector))
        {
            var term = raw.Trim();
            if (term.Length == 0)
            {
                continue;
            }

            var inAt = term.IndexOf(" in ", StringComparison.Ordinal);
            var notInAt = term.IndexOf(" notin ", StringComparison.Ordinal);
            if (notInAt > 0)
            {
                var key = term[..notInAt].Trim();
                var values = ParseSet(term[(notInAt + 7)..]);
                requirements.Add(l => !l.TryGetValue(key, out var v) || !values.Contains(v));
            }
            else if (inAt > 0)
            {
                var key = term[..inAt].Trim();
                var values = ParseSet(term[(inAt + 4)..]);
                requirements.Add(l => l.TryGetValue(key, out var v) && values.Contains(v));
            }
            else if (term.Contains("!=", StringComparison.Ordinal))
            {
                var (key, value) = SplitOn(term, "!=");
                requirements.Add(l => !l.TryGetValue(key, out var v) || v != value);
            }
            else if (term.Contains("==", StringComparison.Ordinal))
            {
                var (key, value) = SplitOn(term, "==");
                requirements.Add(l => l.TryGetValue(key, out var v) && v == value);
            }
            else if (term.Contains('=', StringComparison.Ordinal))
            {
                var (key, value) = SplitOn(term, "=");
                requirements.Add(l => l.TryGetValue(key, out var v) && v == value);
            }
            else if (term.StartsWith('!'))
            {
                var key = term[1..].Trim();
                requirements.Add(l => !l.ContainsKey(key));
            }
            else
            {
                requirements.Add(l => l.ContainsKey(term));
            }
        }

        return obj =>
        {
            var labels = Labels(obj);
            return requirements.All(r => r(labels));
        };
    }

    public static Func<JsonObject, bool> ParseFieldSelector(string? selector)
    {
        if (string.IsNullOrWhiteSpace(selector))
        {
            return _ => true;
        }

        var tests = new List<Func<JsonObject, bool>>();
        foreach (var term in selector.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var negate = term.Contains("!=", StringComparison.Ordinal);
            var (field, value) = SplitOn(term, negate ? "!=" : term.Contains("==", StringComparison.Ordinal) ? "==" : "=");
            if (field is not ("metadata.name" or "metadata.namespace"))
            {
                throw new ApiException(400, "BadRequest", $"field label not supported: {field}");
            }

            tests.Add(o => (Str(o, field) == value) != negate);
        }

        return o => tests.All(t => t(o));
    }

    public static Dictionary<string, string> Labels(JsonObject obj)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (Get(obj, "metadata.labels") is JsonObject map)
        {
            foreach (var (k, v) in map)
            {
                labels[k] = v?.GetValue<string>() ?? "";
            }
        }

        return labels;
    }

    private static HashSet<string> ParseSet(string text) =>
        text.Trim().TrimStart('(').TrimEnd(')').Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);

    private static (string Key, string Value) SplitOn(string term, string op)
    {
        var at = term.IndexOf(op, StringComparison.Ordinal);
        return (term[..at].Trim(), term[(at + op.Length)..].Trim());
    }

    private static IEnumerable<string> SplitTopLevel(string selector)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < selector.Length; i++)
        {
            switch (selector[i])
            {
                case '(':
                    depth++;
                    break;
                case ')':
                    depth--;
                    break;
                case ',' when depth == 0:
                    yield return selector[start..i];
                    start = i + 1;
                    break;
                default:
                    break;
            }
        }

        yield return selector[start..];
    }
}

/// <summary>An API error the fake answers with a Status body.</summary>
internal sealed class ApiException(int code, string reason, string message) : Exception(message)
{
    public int Code { get; } = code;

    public string Reason { get; } = reason;

    public JsonObject ToStatus() => new()
    {
        ["kind"] = "Status",
        ["apiVersion"] = "v1",
        ["metadata"] = new JsonObject(),
        ["status"] = "Failure",
        ["message"] = Message,
        ["reason"] = Reason,
        ["code"] = Code,
    };
}
