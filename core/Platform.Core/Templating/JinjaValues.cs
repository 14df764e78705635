// The value model of the interpreter, with Python's semantics where chat templates can see them:
// null is None, Undefined is Jinja's undefined (prints as "", is falsy, any attribute of it is
// undefined too), long/double/bool/string, List<object?> for lists and tuples, Dictionary<string,
// object?> (insertion-ordered) for dicts. Printing follows Python's str(): True, None, 1.0,
// ['a', 1], {'k': 'v'}; tojson follows json.dumps with Hugging Face's ensure_ascii=False.
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Platform.Core.Templating;

/// <summary>Jinja's undefined value.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();

    private Undefined()
    {
    }

    public override string ToString() => "";
}

/// <summary>The object namespace() makes: attributes assignable from inside loops.</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>A macro or built-in function.</summary>
internal sealed class Callable(string name, Func<List<object?>, Dictionary<string, object?>, object?> invoke)
{
    public string Name { get; } = name;

    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => invoke(args, kwargs);
}

/// <summary>A problem found while rendering (wrong type, unknown filter, raise_exception).</summary>
public class TemplateRenderException : Exception
{
    public TemplateRenderException(string message)
        : base(message)
    {
    }
}

/// <summary>The template called raise_exception(message): the request does not fit the model's template.</summary>
public sealed class TemplateRaisedException : TemplateRenderException
{
    public TemplateRaisedException(string message)
        : base(message)
    {
    }
}

internal static class Values
{
    public static bool IsUndefined(object? v) => v is Undefined;

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "None",
        Undefined => "undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        Namespace => "namespace",
        Callable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Python's str().</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        _ => Repr(v),
    };

    /// <summary>Python's repr(), used inside lists and dicts.</summary>
    public static string Repr(object? v)
    {
        switch (v)
        {
            case string s:
                var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
                var sb = new StringBuilder().Append(quote);
                foreach (var c in s)
                {
                    sb.Append(c switch
                    {
                        '\\' => "\\\\",
                        '\n' => "\\n",
                        '\r' => "\\r",
                        '\t' => "\\t",
                        _ when c == quote => "\\" + c,
                        _ => c.ToString(),
                    });
                }

                return sb.Append(quote).ToString();
            case List<object?> list:
                return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case Dictionary<string, object?> dict:
                return "{" + string.Join(", ", dict.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case Namespace ns:
                return "<Namespace " + Repr(ns.Attributes) + ">";
            case Callable c:
                return "<function " + c.Name + ">";
            default:
                return Str(v);
        }
    }

    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d))
        {
            return "nan";
        }

        if (double.IsInfinity(d))
        {
            return d > 0 ? "inf" : "-inf";
        }

        var r = d.ToString("R", CultureInfo.InvariantCulture);
        return r.Contains('.') || r.Contains('E') ? r.Replace("E+", "e+", StringComparison.Ordinal).Replace("E-", "e-", StringComparison.Ordinal) : r + ".0";
    }

    /// <summary>json.dumps(v, ensure_ascii=False, indent=..., separators=..., sort_keys=...) as transformers' tojson filter calls it.</summary>
    public static string ToJson(object? v, int? indent, string? itemSeparator = null, string? keySeparator = null, bool sortKeys = false)
    {
        var sb = new StringBuilder();
        // Python's defaults: ", " and ": ", or "," and ": " when indenting.
        var json = new JsonStyle(indent, itemSeparator ?? (indent is null ? ", " : ","), keySeparator ?? ": ", sortKeys);
        WriteJson(sb, v, json, 0);
        return sb.ToString();
    }

    private sealed record JsonStyle(int? Indent, string ItemSeparator, string KeySeparator, bool SortKeys);

    private static void WriteJson(StringBuilder sb, object? v, JsonStyle style, int depth)
    {
        var indent = style.Indent;
        switch (v)
        {
            case null or Undefined:
                sb.Append("null");
                return;
            case bool b:
                sb.Append(b ? "true" : "false");
                return;
            case long l:
                sb.Append(l.ToString(CultureInfo.InvariantCulture));
                return;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FormatFloat(d));
                return;
            case string s:
                WriteJsonString(sb, s);
                return;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list.Count, style, depth, i => WriteJson(sb, list[i], style, depth + 1));
                return;
            case Dictionary<string, object?> dict:
            {
                var entries = style.SortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                WriteContainer(sb, '{', '}', entries.Count, style, depth, i =>
                {
                    WriteJsonString(sb, entries[i].Key);
                    sb.Append(style.KeySeparator);
                    WriteJson(sb, entries[i].Value, style, depth + 1);
                });
                return;
            }

            case Namespace ns:
                WriteJson(sb, ns.Attributes, style, depth);
                return;
            default:
                throw new TemplateRenderException($"tojson cannot serialize a {TypeName(v)}");
        }
    }

    private static void WriteContainer(StringBuilder sb, char open, char close, int count, JsonStyle style, int depth, Action<int> item)
    {
        var indent = style.Indent;
        sb.Append(open);
        if (count == 0)
        {
            sb.Append(close);
            return;
        }

        for (var i = 0; i < count; i++)
        {
            if (indent is int n)
            {
                if (i > 0)
                {
                    sb.Append(style.ItemSeparator);
                }

                sb.Append('\n').Append(' ', n * (depth + 1));
            }
            else if (i > 0)
            {
                sb.Append(style.ItemSeparator);
            }

            item(i);
        }

        if (indent is int m)
        {
            sb.Append('\n').Append(' ', m * depth);
        }

        sb.Append(close);
    }

    private static void WriteJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20)
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }

                    break;
            }
        }

        sb.Append('"');
    }

    /// <summary>A JSON value (a request's messages, tools, documents) as interpreter values.</summary>
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (d, p) =>
        {
            d[p.Name] = FromJson(p.Value);
            return d;
        }),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    public static bool Equal(object? a, object? b)
    {
        if (a is Undefined || b is Undefined)
        {
            return a is Undefined && b is Undefined;
        }

        if (IsNumber(a) && IsNumber(b))
        {
            return ToDouble(a) == ToDouble(b);
        }

        return (a, b) switch
        {
            (null, null) => true,
            (null, _) or (_, null) => false,
            (string x, string y) => string.Equals(x, y, StringComparison.Ordinal),
            (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equal(p.First, p.Second)),
            (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
                x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var o) && Equal(kv.Value, o)),
            _ => ReferenceEquals(a, b),
        };
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new TemplateRenderException($"expected a number, got {TypeName(v)}"),
    };

    public static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            return ToDouble(a).CompareTo(ToDouble(b));
        }

        if (a is string x && b is string y)
        {
            return string.CompareOrdinal(x, y);
        }

        throw new TemplateRenderException($"cannot compare {TypeName(a)} with {TypeName(b)}");
    }

    /// <summary>Items of an iterable: list items, dict keys, string characters.</summary>
    public static List<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => StringElements(s),
        Undefined => [],
        Namespace ns => ns.Attributes.Keys.Cast<object?>().ToList(),
        _ => throw new TemplateRenderException($"'{TypeName(v)}' object is not iterable"),
    };

    /// <summary>Code points (a surrogate pair is one element, as in Python).</summary>
    public static List<object?> StringElements(string s)
    {
        var list = new List<object?>(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            var w = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            list.Add(s.Substring(i, w));
            i += w - 1;
        }

        return list;
    }
}
