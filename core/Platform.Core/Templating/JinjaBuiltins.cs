// What templates can call: filters (| trim, tojson, selectattr, map, join, ...), tests (is defined,
// is string, ...), Python methods on strings and dicts (strip, startswith, split, items, get, ...),
// and the globals Hugging Face's environment adds: range, namespace, dict, raise_exception and
// strftime_now. Attribute access follows Jinja on Python objects: a dict method name wins over a
// key of the same name for obj.name, the key wins for obj['name'].
using System.Globalization;
using System.Text;

namespace Platform.Core.Templating;

internal static class JinjaBuiltins
{
    public static Dictionary<string, object?> Globals(TimeProvider clock) => new(StringComparer.Ordinal)
    {
        ["range"] = new Callable("range", (a, _) =>
        {
            long start = 0, stop, step = 1;
            if (a.Count == 1)
            {
                stop = Int(a[0]);
            }
            else
            {
                start = Int(a[0]);
                stop = Int(a[1]);
                step = a.Count > 2 ? Int(a[2]) : 1;
            }

            if (step == 0)
            {
                throw new TemplateRenderException("range() step must not be zero");
            }

            var list = new List<object?>();
            for (var i = start; step > 0 ? i < stop : i > stop; i += step)
            {
                list.Add(i);
            }

            return list;
        }),
        ["namespace"] = new Callable("namespace", (a, kw) =>
        {
            var ns = new Namespace();
            if (a.Count > 0 && a[0] is Dictionary<string, object?> init)
            {
                foreach (var (k, v) in init)
                {
                    ns.Attributes[k] = v;
                }
            }

            foreach (var (k, v) in kw)
            {
                ns.Attributes[k] = v;
            }

            return ns;
        }),
        ["dict"] = new Callable("dict", (_, kw) => new Dictionary<string, object?>(kw, StringComparer.Ordinal)),
        ["raise_exception"] = new Callable("raise_exception", (a, _) =>
            throw new TemplateRaisedException(a.Count > 0 ? Values.Str(a[0]) : "the chat template raised an exception")),
        ["strftime_now"] = new Callable("strftime_now", (a, _) => Strftime(clock.GetLocalNow(), a.Count > 0 ? Values.Str(a[0]) : "%Y-%m-%d")),
    };

    private static long Int(object? v) => v switch
    {
        long l => l,
        double d => (long)d,
        bool b => b ? 1 : 0,
        string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) => p,
        _ => throw new TemplateRenderException($"expected an integer, got {Values.TypeName(v)}"),
    };

    /// <summary>Python's strftime for the directives templates use.</summary>
    public static string Strftime(DateTimeOffset t, string format)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                sb.Append(format[i]);
                continue;
            }

            var d = format[++i];
            sb.Append(d switch
            {
                'd' => t.ToString("dd", inv),
                'm' => t.ToString("MM", inv),
                'Y' => t.ToString("yyyy", inv),
                'y' => t.ToString("yy", inv),
                'b' => t.ToString("MMM", inv),
                'B' => t.ToString("MMMM", inv),
                'a' => t.ToString("ddd", inv),
                'A' => t.ToString("dddd", inv),
                'H' => t.ToString("HH", inv),
                'I' => t.ToString("hh", inv),
                'M' => t.ToString("mm", inv),
                'S' => t.ToString("ss", inv),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => t.DayOfYear.ToString("000", inv),
                'e' => t.Day.ToString(inv).PadLeft(2),
                '-' when i + 1 < format.Length && format[i + 1] == 'd' => t.Day.ToString(inv) + SkipNext(ref i),
                '%' => "%",
                _ => "%" + d,
            });
        }

        return sb.ToString();
    }

    private static string SkipNext(ref int i)
    {
        i++;
        return "";
    }

    public static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Dictionary<string, object?> d:
                return DictMethod(d, name) ?? (d.TryGetValue(name, out var v) ? v : Undefined.Instance);
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var a) ? a : Undefined.Instance;
            case string s:
                return (object?)StringMethod(s, name) ?? Undefined.Instance;
            case List<object?> l when int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var index):
                return GetItem(l, (long)index);
            default:
                return Undefined.Instance;
        }
    }

    public static object? GetItem(object? target, object? index)
    {
        switch (target)
        {
            case Dictionary<string, object?> d:
                return index is not null && d.TryGetValue(Values.Str(index), out var v) ? v : Undefined.Instance;
            case Namespace ns:
                return ns.Attributes.TryGetValue(Values.Str(index), out var a) ? a : Undefined.Instance;
            case List<object?> l when index is long or bool:
            {
                var i = Int(index);
                if (i < 0)
                {
                    i += l.Count;
                }

                return i >= 0 && i < l.Count ? l[(int)i] : Undefined.Instance;
            }

            case string s when index is long or bool:
            {
                var chars = Values.StringElements(s);
                var i = Int(index);
                if (i < 0)
                {
                    i += chars.Count;
                }

                return i >= 0 && i < chars.Count ? chars[(int)i] : Undefined.Instance;
            }

            case string s when index is string name:
                return (object?)StringMethod(s, name) ?? Undefined.Instance;
            default:
                return Undefined.Instance;
        }
    }

    /// <summary>Python slicing a[start:stop:step] of a list or string.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        var items = target switch
        {
            List<object?> l => l,
            string s => Values.StringElements(s),
            Undefined or null => [],
            _ => throw new TemplateRenderException($"a {Values.TypeName(target)} cannot be sliced"),
        };
        var n = items.Count;
        var st = step is null or Undefined ? 1 : Int(step);
        if (st == 0)
        {
            throw new TemplateRenderException("slice step cannot be zero");
        }

        long Clamp(object? v, long whenNone, long low, long high)
        {
            if (v is null or Undefined)
            {
                return whenNone;
            }

            var i = Int(v);
            if (i < 0)
            {
                i += n;
            }

            return Math.Clamp(i, low, high);
        }

        var result = new List<object?>();
        if (st > 0)
        {
            var a = Clamp(start, 0, 0, n);
            var b = Clamp(stop, n, 0, n);
            for (var i = a; i < b; i += st)
            {
                result.Add(items[(int)i]);
            }
        }
        else
        {
            var a = Clamp(start, n - 1, -1, n - 1);
            var b = Clamp(stop, -1, -1, n - 1);
            for (var i = a; i > b; i += st)
            {
                result.Add(items[(int)i]);
            }
        }

        return target is string ? string.Concat(result.Cast<string>()) : result;
    }

    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new TemplateRenderException($"'in <string>' needs a string, not {Values.TypeName(item)}"),
        List<object?> l => l.Any(x => Values.Equal(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Namespace ns => item is string k && ns.Attributes.ContainsKey(k),
        Undefined => false,
        _ => throw new TemplateRenderException($"argument of type '{Values.TypeName(container)}' is not iterable"),
    };

    private static Callable? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => new Callable("items", (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()),
        "keys" => new Callable("keys", (_, _) => d.Keys.Cast<object?>().ToList()),
        "values" => new Callable("values", (_, _) => d.Values.ToList()),
        "get" => new Callable("get", (a, _) => a.Count > 0 && d.TryGetValue(Values.Str(a[0]), out var v) ? v : a.Count > 1 ? a[1] : null),
        _ => null,
    };

    private static Callable? StringMethod(string s, string name) => name switch
    {
        "strip" => new Callable(name, (a, _) => a.Count > 0 && a[0] is string c ? s.Trim(c.ToCharArray()) : PyStrip(s, true, true)),
        "lstrip" => new Callable(name, (a, _) => a.Count > 0 && a[0] is string c ? s.TrimStart(c.ToCharArray()) : PyStrip(s, true, false)),
        "rstrip" => new Callable(name, (a, _) => a.Count > 0 && a[0] is string c ? s.TrimEnd(c.ToCharArray()) : PyStrip(s, false, true)),
        "lower" => new Callable(name, (_, _) => s.ToLowerInvariant()),
        "upper" => new Callable(name, (_, _) => s.ToUpperInvariant()),
        "title" => new Callable(name, (_, _) => Title(s)),
        "capitalize" => new Callable(name, (_, _) => Capitalize(s)),
        "startswith" => new Callable(name, (a, _) => Prefixes(a).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
        "endswith" => new Callable(name, (a, _) => Prefixes(a).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
        "replace" => new Callable(name, (a, _) => Replace(s, Values.Str(a[0]), Values.Str(a[1]), a.Count > 2 ? Int(a[2]) : -1)),
        "split" => new Callable(name, (a, kw) => Split(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"), a.Count > 1 ? Int(a[1]) : kw.TryGetValue("maxsplit", out var m) ? Int(m) : -1)),
        "rsplit" => new Callable(name, (a, kw) => RSplit(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"), a.Count > 1 ? Int(a[1]) : kw.TryGetValue("maxsplit", out var m) ? Int(m) : -1)),
        "splitlines" => new Callable(name, (_, _) => s.Split('\n').Select(l => (object?)l.TrimEnd('\r')).ToList() is var lines && s.EndsWith('\n') ? lines.Take(lines.Count - 1).ToList() : s.Split('\n').Select(l => (object?)l.TrimEnd('\r')).ToList()),
        "find" => new Callable(name, (a, _) => (long)s.IndexOf(Values.Str(a[0]), StringComparison.Ordinal)),
        "count" => new Callable(name, (a, _) => (long)CountOccurrences(s, Values.Str(a[0]))),
        "join" => new Callable(name, (a, _) => string.Join(s, Values.Iterate(a[0]).Select(Values.Str))),
        "isdigit" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
        "isalpha" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsLetter)),
        "isspace" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
        "islower" => new Callable(name, (_, _) => s.Any(char.IsLetter) && !s.Any(char.IsUpper)),
        "isupper" => new Callable(name, (_, _) => s.Any(char.IsLetter) && !s.Any(char.IsLower)),
        _ => null,
    };

    private static IEnumerable<string> Prefixes(List<object?> a) =>
        a.Count == 0 ? throw new TemplateRenderException("startswith/endswith need an argument")
        : a[0] is List<object?> many ? many.Select(Values.Str) : [Values.Str(a[0])];

    private static string PyStrip(string s, bool left, bool right) => left && right ? s.Trim() : left ? s.TrimStart() : s.TrimEnd();

    private static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0)
        {
            return old.Length == 0 ? string.Join(replacement, Values.StringElements(s).Prepend("").Append("")) : s.Replace(old, replacement, StringComparison.Ordinal);
        }

        var sb = new StringBuilder();
        var pos = 0;
        for (var done = 0L; done < count; done++)
        {
            var at = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (at < 0 || old.Length == 0)
            {
                break;
            }

            sb.Append(s, pos, at - pos).Append(replacement);
            pos = at + old.Length;
        }

        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    private static List<object?> Split(string s, object? sep, long max)
    {
        if (sep is null or Undefined)
        {
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (max < 0 || words.Length <= max + 1)
            {
                return words.Cast<object?>().ToList();
            }

            // Whitespace split with maxsplit: the rest keeps its inner whitespace.
            var result = new List<object?>();
            var rest = s.TrimStart();
            for (var i = 0; i < max; i++)
            {
                var end = rest.IndexOfAny([' ', '\t', '\n', '\r', '\f', '\v']);
                result.Add(rest[..end]);
                rest = rest[end..].TrimStart();
            }

            result.Add(rest);
            return result;
        }

        var separator = Values.Str(sep);
        if (separator.Length == 0)
        {
            throw new TemplateRenderException("split() separator must not be empty");
        }

        return (max < 0 ? s.Split(separator) : s.Split(separator, (int)max + 1)).Cast<object?>().ToList();
    }

    private static List<object?> RSplit(string s, object? sep, long max)
    {
        if (max < 0 || sep is null or Undefined)
        {
            return Split(s, sep, max);
        }

        var separator = Values.Str(sep);
        var parts = new List<object?>();
        var end = s.Length;
        for (var i = 0; i < max; i++)
        {
            var at = s.LastIndexOf(separator, end - 1 < 0 ? 0 : end - 1, StringComparison.Ordinal);
            if (at < 0 || end == 0)
            {
                break;
            }

            parts.Insert(0, s[(at + separator.Length)..end]);
            end = at;
        }

        parts.Insert(0, s[..end]);
        return parts;
    }

    private static int CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0)
        {
            return Values.StringElements(s).Count + 1;
        }

        var n = 0;
        for (var i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }

    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        var previousCased = false;
        foreach (var c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }

        return sb.ToString();
    }

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    public static object? ApplyFilter(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs, object renderer, JinjaTemplate.Scope scope)
    {
        object? Arg(int i, string key, object? fallback = null) => i < args.Count ? args[i] : kwargs.TryGetValue(key, out var v) ? v : fallback;
        switch (name)
        {
            case "trim":
                return Arg(0, "chars") is string chars ? Values.Str(value).Trim(chars.ToCharArray()) : Values.Str(value).Trim();
            case "tojson":
            {
                var separators = kwargs.GetValueOrDefault("separators") as List<object?>;
                return Values.ToJson(value, Arg(0, "indent") is long indent ? (int)indent : null,
                    separators is { Count: 2 } ? Values.Str(separators[0]) : null, separators is { Count: 2 } ? Values.Str(separators[1]) : null,
                    Values.Truthy(kwargs.GetValueOrDefault("sort_keys", false)));
            }
            case "length" or "count":
                return value switch
                {
                    string s => (long)Values.StringElements(s).Count,
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> d => (long)d.Count,
                    Undefined => 0L,
                    _ => throw new TemplateRenderException($"object of type '{Values.TypeName(value)}' has no len()"),
                };
            case "lower":
                return Values.Str(value).ToLowerInvariant();
            case "upper":
                return Values.Str(value).ToUpperInvariant();
            case "title":
                return Title(Values.Str(value));
            case "capitalize":
                return Capitalize(Values.Str(value));
            case "string":
                return Values.Str(value);
            case "safe" or "e" or "escape" or "forceescape":
                // Hugging Face renders without autoescaping: escape filters are not used by chat templates.
                return name == "safe" ? value : System.Net.WebUtility.HtmlEncode(Values.Str(value));
            case "items":
                return value is Dictionary<string, object?> d1
                    ? d1.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                    : value is Undefined ? [] : throw new TemplateRenderException($"items needs a dict, got {Values.TypeName(value)}");
            case "dictsort":
                return value is Dictionary<string, object?> d2
                    ? d2.OrderBy(kv => kv.Key, StringComparer.OrdinalIgnoreCase).Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()
                    : throw new TemplateRenderException($"dictsort needs a dict, got {Values.TypeName(value)}");
            case "list":
                return Values.Iterate(value).ToList();
            case "first":
                return Values.Iterate(value) is { Count: > 0 } f ? f[0] : Undefined.Instance;
            case "last":
                return Values.Iterate(value) is { Count: > 0 } l2 ? l2[^1] : Undefined.Instance;
            case "reverse":
                return value is string rs ? string.Concat(Values.StringElements(rs).Cast<string>().Reverse()) : Values.Iterate(value).AsEnumerable().Reverse().ToList();
            case "join":
            {
                var items = Values.Iterate(value);
                if (Arg(1, "attribute") is { } attr and not Undefined)
                {
                    items = items.Select(i => GetPath(i, attr)).ToList();
                }

                return string.Join(Values.Str(Arg(0, "d", "")), items.Select(Values.Str));
            }

            case "default" or "d":
            {
                var fallback = Arg(0, "default_value", "");
                var boolean = Values.Truthy(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !Values.Truthy(value)) ? fallback : value;
            }

            case "int":
                return value switch
                {
                    long l => l,
                    double dd => (long)dd,
                    bool b => b ? 1L : 0L,
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) => p,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var pd) => (long)pd,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value switch
                {
                    long l => (double)l,
                    double dd => dd,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var p) => p,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs":
                return value is long al ? Math.Abs(al) : (object)Math.Abs(Values.ToDouble(value));
            case "round":
            {
                var digits = (int)Int(Arg(0, "precision", 0L));
                var method = Values.Str(Arg(1, "method", "common"));
                var x = Values.ToDouble(value);
                var factor = Math.Pow(10, digits);
                return method switch
                {
                    "floor" => Math.Floor(x * factor) / factor,
                    "ceil" => Math.Ceiling(x * factor) / factor,
                    _ => Math.Round(x, digits, MidpointRounding.AwayFromZero),
                };
            }

            case "replace":
                return Replace(Values.Str(value), Values.Str(Arg(0, "old")), Values.Str(Arg(1, "new")), Arg(2, "count") is long c ? c : -1);
            case "indent":
            {
                var width = Arg(0, "width", 4L) is string w ? w : new string(' ', (int)Int(Arg(0, "width", 4L)));
                var first = Values.Truthy(Arg(1, "first", false));
                var blank = Values.Truthy(Arg(2, "blank", false));
                var lines = Values.Str(value).Split('\n');
                for (var i = 0; i < lines.Length; i++)
                {
                    if ((i > 0 || first) && (blank || lines[i].Length > 0))
                    {
                        lines[i] = width + lines[i];
                    }
                }

                return string.Join('\n', lines);
            }

            case "wordcount":
                return (long)Values.Str(value).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            case "unique":
            {
                var result = new List<object?>();
                foreach (var item in Values.Iterate(value))
                {
                    if (!result.Any(r => Values.Equal(r, item)))
                    {
                        result.Add(item);
                    }
                }

                return result;
            }

            case "sort":
            {
                var reverse = Values.Truthy(Arg(0, "reverse", false));
                var attribute = Arg(2, "attribute");
                var items = Values.Iterate(value).ToList();
                Func<object?, object?> key = attribute is null or Undefined ? x => x : x => GetPath(x, attribute);
                items.Sort((a, b) => Values.Compare(key(a), key(b)));
                if (reverse)
                {
                    items.Reverse();
                }

                return items;
            }

            case "sum":
            {
                var attribute = Arg(0, "attribute");
                object? total = Arg(1, "start", 0L);
                foreach (var item in Values.Iterate(value))
                {
                    var x = attribute is null or Undefined ? item : GetPath(item, attribute);
                    total = total is long tl && x is long xl ? tl + xl : (object)(Values.ToDouble(total) + Values.ToDouble(x));
                }

                return total;
            }

            case "min" or "max":
            {
                var items = Values.Iterate(value);
                if (items.Count == 0)
                {
                    return Undefined.Instance;
                }

                var best = items[0];
                foreach (var item in items.Skip(1))
                {
                    var order = Values.Compare(item, best);
                    if (name == "min" ? order < 0 : order > 0)
                    {
                        best = item;
                    }
                }

                return best;
            }

            case "selectattr" or "rejectattr":
            {
                var attribute = Arg(0, "attr") ?? throw new TemplateRenderException($"{name} needs an attribute name");
                var keep = name == "selectattr";
                return Values.Iterate(value).Where(item =>
                {
                    var v = GetPath(item, attribute);
                    var ok = args.Count > 1 ? ApplyTest(Values.Str(args[1]), v, args.Skip(2).ToList()) : Values.Truthy(v);
                    return ok == keep;
                }).ToList();
            }

            case "select" or "reject":
            {
                var keep = name == "select";
                return Values.Iterate(value).Where(item =>
                {
                    var ok = args.Count > 0 ? ApplyTest(Values.Str(args[0]), item, args.Skip(1).ToList()) : Values.Truthy(item);
                    return ok == keep;
                }).ToList();
            }

            case "map":
            {
                var items = Values.Iterate(value);
                if (kwargs.TryGetValue("attribute", out var attribute))
                {
                    var fallback = kwargs.GetValueOrDefault("default", Undefined.Instance);
                    return items.Select(i => GetPath(i, attribute) is var v && v is Undefined ? fallback : v).ToList();
                }

                if (args.Count == 0)
                {
                    throw new TemplateRenderException("map needs a filter name or attribute=...");
                }

                var filter = Values.Str(args[0]);
                var rest = args.Skip(1).ToList();
                return items.Select(i => ApplyFilter(filter, i, rest, new Dictionary<string, object?>(StringComparer.Ordinal), renderer, scope)).ToList();
            }

            case "batch":
            {
                var size = (int)Int(Arg(0, "linecount"));
                return Values.Iterate(value).Chunk(Math.Max(1, size)).Select(c => (object?)c.ToList()).ToList();
            }

            case "truncate":
            {
                var s = Values.Str(value);
                var length = (int)Int(Arg(0, "length", 255L));
                return s.Length <= length ? s : s[..Math.Max(0, length - 3)] + "...";
            }

            case "center":
            {
                var s = Values.Str(value);
                var width = (int)Int(Arg(0, "width", 80L));
                var pad = Math.Max(0, width - s.Length);
                return new string(' ', pad / 2) + s + new string(' ', pad - (pad / 2));
            }

            default:
                throw new TemplateRenderException($"unknown filter '{name}'");
        }
    }

    /// <summary>An attribute path "a.b" (selectattr, map, join, sort take dotted paths).</summary>
    private static object? GetPath(object? item, object? path)
    {
        if (path is long index)
        {
            return GetItem(item, index);
        }

        foreach (var part in Values.Str(path).Split('.'))
        {
            item = item is Dictionary<string, object?> d ? (d.TryGetValue(part, out var v) ? v : Undefined.Instance) : GetAttribute(item, part);
        }

        return item;
    }

    public static bool ApplyTest(string name, object? value, List<object?> args)
    {
        object? Arg0() => args.Count > 0 ? args[0] : throw new TemplateRenderException($"the test '{name}' needs an argument");
        return name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            "number" => value is long or double,
            "integer" => value is long,
            "float" => value is double,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "mapping" => value is Dictionary<string, object?> or Namespace,
            "iterable" => value is List<object?> or Dictionary<string, object?> or string,
            "sequence" => value is List<object?> or string or Dictionary<string, object?>,
            "callable" => value is Callable,
            "equalto" or "eq" or "==" or "sameas" => Values.Equal(value, Arg0()),
            "ne" or "!=" => !Values.Equal(value, Arg0()),
            "gt" or "greaterthan" or ">" => Values.Compare(value, Arg0()) > 0,
            "ge" or ">=" => Values.Compare(value, Arg0()) >= 0,
            "lt" or "lessthan" or "<" => Values.Compare(value, Arg0()) < 0,
            "le" or "<=" => Values.Compare(value, Arg0()) <= 0,
            "in" => Contains(Arg0(), value),
            "odd" => Int(value) % 2 != 0,
            "even" => Int(value) % 2 == 0,
            "divisibleby" => Int(value) % Int(Arg0()) == 0,
            "lower" => value is string ls && string.Equals(ls, ls.ToLowerInvariant(), StringComparison.Ordinal),
            "upper" => value is string us && string.Equals(us, us.ToUpperInvariant(), StringComparison.Ordinal),
            _ => throw new TemplateRenderException($"unknown test '{name}'"),
        };
    }
}
