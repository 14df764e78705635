// The namespace dependency graph of our production code, read from source: for
// each .cs file, its namespace depends on every Platform.* namespace it imports
// (using, using static, using alias), names with a qualified reference
// (Platform.Engine.KvCache.BlockPool, or KvCache.BlockPool relative to an
// enclosing namespace), or reaches unqualified through an enclosing namespace
// (a type declared in Platform.Engine used from Platform.Engine.KvCache).
// Comments and string literals are blanked first, so text in them never counts.
// Over-approximate on purpose (a name declared in two namespaces counts for
// both): a false edge is fixed by qualifying a name, a missed one hides a cycle.
using System.Text;
using System.Text.RegularExpressions;

namespace Platform.Core.Tests.Layering;

public sealed partial class NamespaceGraph
{
    private readonly Dictionary<string, Dictionary<string, SortedSet<string>>> _edges = new(StringComparer.Ordinal);

    public IReadOnlySet<string> Namespaces { get; }

    /// <summary>Builds the graph of <paramref name="files"/> (path → source text).</summary>
    public NamespaceGraph(IReadOnlyDictionary<string, string> files)
    {
        var parsed = new List<(string Path, string Namespace, string Code)>();
        foreach (var (path, text) in files)
        {
            var code = Blank(text);
            if (NamespaceDeclaration().Match(code) is { Success: true } m) parsed.Add((path, m.Groups[1].Value, code));
        }
        var namespaces = parsed.Select(p => p.Namespace).ToHashSet(StringComparer.Ordinal);
        Namespaces = namespaces;
        var declaredIn = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var (_, ns, code) in parsed)
            foreach (Match m in TypeDeclaration().Matches(code))
            {
                string type = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
                if (!declaredIn.TryGetValue(type, out var set)) declaredIn[type] = set = new(StringComparer.Ordinal);
                set.Add(ns);
            }

        foreach (var (path, ns, code) in parsed)
        {
            var enclosing = Enclosing(ns).ToList();
            // A name qualified relative to the file's own namespace or any enclosing one (C# looks in all of them).
            var bases = enclosing.Prepend(ns).ToList();
            var imported = new HashSet<string>(StringComparer.Ordinal);
            foreach (Match m in UsingDirective().Matches(code))
            {
                if (Longest(m.Groups[1].Value, namespaces) is { } target)
                {
                    imported.Add(target);
                    Add(ns, target, path, "using");
                }
            }
            var body = NamespaceDeclaration().Replace(UsingDirective().Replace(code, ""), "");
            foreach (Match m in Name().Matches(body))
            {
                var parts = m.Value.Split('.');
                bool qualified = false;
                for (int k = parts.Length - 1; k >= 1 && !qualified; k--)
                {
                    string prefix = string.Join('.', parts[..k]);
                    foreach (var candidate in bases.Select(e => e + "." + prefix).Prepend(prefix))
                    {
                        if (!namespaces.Contains(candidate)) continue;
                        Add(ns, candidate, path, m.Value);
                        qualified = true;
                        break;
                    }
                }
                if (qualified || !declaredIn.TryGetValue(parts[0], out var owners) || owners.Contains(ns)) continue;
                foreach (var owner in owners.Where(o => imported.Contains(o) || enclosing.Contains(o)))
                    Add(ns, owner, path, parts[0]);
            }
        }
    }

    /// <summary>Reads every .cs file under <paramref name="folders"/> of <paramref name="root"/> (bin and obj left out).</summary>
    public static NamespaceGraph FromFolders(string root, IEnumerable<string> folders)
    {
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var folder in folders)
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, folder), "*.cs", SearchOption.AllDirectories))
            {
                var relative = Path.GetRelativePath(root, file).Replace('\\', '/');
                if (relative.Split('/').Any(part => part is "bin" or "obj")) continue;
                files[relative] = File.ReadAllText(file);
            }
        return new NamespaceGraph(files);
    }

    /// <summary>Namespace → the namespaces it depends on, each with the files (and the name) that make the edge.</summary>
    public IReadOnlyDictionary<string, Dictionary<string, SortedSet<string>>> Edges => _edges;

    public bool DependsOn(string from, string to) => _edges.TryGetValue(from, out var targets) && targets.ContainsKey(to);

    /// <summary>Strongly connected components with more than one namespace: each is a cycle (Tarjan).</summary>
    public List<SortedSet<string>> Cycles()
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var low = new Dictionary<string, int>(StringComparer.Ordinal);
        var stack = new Stack<string>();
        var onStack = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<SortedSet<string>>();
        int next = 0;
        void Visit(string v)
        {
            index[v] = low[v] = next++;
            stack.Push(v);
            onStack.Add(v);
            foreach (var w in _edges.TryGetValue(v, out var targets) ? targets.Keys.ToList() : [])
            {
                if (!index.TryGetValue(w, out int wIndex))
                {
                    Visit(w);
                    low[v] = Math.Min(low[v], low[w]);
                }
                else if (onStack.Contains(w)) low[v] = Math.Min(low[v], wIndex);
            }
            if (low[v] != index[v]) return;
            var component = new SortedSet<string>(StringComparer.Ordinal);
            string x;
            do
            {
                x = stack.Pop();
                onStack.Remove(x);
                component.Add(x);
            }
            while (x != v);
            if (component.Count > 1) result.Add(component);
        }
        foreach (var ns in Namespaces.Order(StringComparer.Ordinal))
            if (!index.ContainsKey(ns)) Visit(ns);
        return result;
    }

    /// <summary>One line per edge: "A -> B (file: name, ...)".</summary>
    public string Describe(IEnumerable<string>? only = null)
    {
        var filter = only?.ToHashSet(StringComparer.Ordinal);
        var sb = new StringBuilder();
        foreach (var (from, targets) in _edges.OrderBy(e => e.Key, StringComparer.Ordinal))
            foreach (var (to, why) in targets.OrderBy(t => t.Key, StringComparer.Ordinal))
                if (filter is null || (filter.Contains(from) && filter.Contains(to)))
                    sb.Append(from).Append(" -> ").Append(to).Append("  (").AppendJoin(", ", why.Take(4)).Append(why.Count > 4 ? ", ..." : "").AppendLine(")");
        return sb.ToString();
    }

    private void Add(string from, string to, string path, string why)
    {
        if (from == to) return;
        if (!_edges.TryGetValue(from, out var targets)) _edges[from] = targets = new(StringComparer.Ordinal);
        if (!targets.TryGetValue(to, out var reasons)) targets[to] = reasons = new(StringComparer.Ordinal);
        reasons.Add($"{path}: {why}");
    }

    private static IEnumerable<string> Enclosing(string ns)
    {
        for (int i = ns.LastIndexOf('.'); i > 0; i = ns.LastIndexOf('.', i - 1)) yield return ns[..i];
    }

    private static string? Longest(string name, HashSet<string> namespaces)
    {
        for (string? n = name; n is not null; n = n.LastIndexOf('.') is int i and > 0 ? n[..i] : null)
            if (namespaces.Contains(n)) return n;
        return null;
    }

    /// <summary>Replaces comments, strings and character literals by spaces (keeping line breaks).</summary>
    internal static string Blank(string text)
    {
        var sb = new StringBuilder(text.Length);
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            int end;
            int quote = c == '"' ? i : QuoteAfterPrefix(text, i) ?? -1;
            if (c == '/' && At(text, i + 1) == '/') end = IndexOrEnd(text, "\n", i);
            else if (c == '/' && At(text, i + 1) == '*') end = IndexOrEnd(text, "*/", i + 2) + 2;
            else if (quote >= 0 && text.AsSpan(quote).StartsWith("\"\"\"")) end = IndexOrEnd(text, "\"\"\"", quote + 3) + 3;
            else if (quote >= 0 && text[i..quote].Contains('@')) end = VerbatimEnd(text, quote + 1);
            else if (quote >= 0) end = RegularEnd(text, quote + 1, '"');
            else if (c == '\'' && !char.IsLetterOrDigit(At(text, i - 1))) end = RegularEnd(text, i + 1, '\'');
            else
            {
                sb.Append(c);
                i++;
                continue;
            }
            end = Math.Min(end, text.Length);
            for (int j = i; j < end; j++) sb.Append(text[j] == '\n' ? '\n' : ' ');
            i = end;
        }
        return sb.ToString();
    }

    private static char At(string s, int i) => i >= 0 && i < s.Length ? s[i] : '\0';
    private static int IndexOrEnd(string s, string what, int from) => s.IndexOf(what, Math.Min(from, s.Length), StringComparison.Ordinal) is int i and >= 0 ? i : s.Length;

    /// <summary>For a string prefix ($, @, $@, @$) at <paramref name="i"/>, the index of its opening quote.</summary>
    private static int? QuoteAfterPrefix(string s, int i)
    {
        int j = i;
        while (j < s.Length && j - i < 2 && s[j] is '$' or '@') j++;
        return j > i && At(s, j) == '"' ? j : null;
    }

    private static int VerbatimEnd(string s, int i)
    {
        while (i < s.Length)
        {
            if (s[i] == '"')
            {
                if (At(s, i + 1) == '"') { i += 2; continue; }
                return i + 1;
            }
            i++;
        }
        return s.Length;
    }

    private static int RegularEnd(string s, int i, char quote)
    {
        while (i < s.Length && s[i] != quote && s[i] != '\n') i += s[i] == '\\' ? 2 : 1;
        return i + 1;
    }

    [GeneratedRegex(@"^\s*namespace\s+([\w.]+)", RegexOptions.Multiline)]
    private static partial Regex NamespaceDeclaration();

    [GeneratedRegex(@"\b(?:class|struct|record|interface|enum)\s+([A-Z]\w*)|\bdelegate\s+[\w<>\[\]?,. ]+?\s+([A-Z]\w*)\s*[<(]")]
    private static partial Regex TypeDeclaration();

    [GeneratedRegex(@"^\s*(?:global\s+)?using\s+(?:static\s+)?(?:\w+\s*=\s*)?(Platform(?:\.\w+)+)\s*;", RegexOptions.Multiline)]
    private static partial Regex UsingDirective();

    [GeneratedRegex(@"(?<![\w.])[A-Z]\w*(?:\.[A-Z]\w*)*")]
    private static partial Regex Name();
}
