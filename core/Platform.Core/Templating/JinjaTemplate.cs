// A parsed Jinja template and its renderer: the subset of Jinja that Hugging Face chat templates use
// (see JinjaParser for the syntax, JinjaBuiltins for filters, tests, methods and globals). Rendering
// walks the tree with a chain of variable scopes: a for loop or macro call gets its own scope, so a
// {% set %} inside a loop does not leak out (as in Jinja; namespace() objects are the way out).
// Parse once, render many times: a JinjaTemplate is immutable and thread-safe.
using System.Text;

namespace Platform.Core.Templating;

public sealed class JinjaTemplate
{
    private readonly List<Node> _body;

    private JinjaTemplate(List<Node> body)
    {
        _body = body;
    }

    /// <exception cref="TemplateSyntaxException">The source is not valid Jinja or uses an unsupported statement.</exception>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new JinjaTemplate(JinjaParser.Parse(source));
    }

    /// <summary>Renders with the given variables (strings, numbers, bools, null, lists, string-keyed dictionaries, JsonElements).</summary>
    /// <exception cref="TemplateRenderException">A runtime error, or the template called raise_exception (TemplateRaisedException).</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var globals = JinjaBuiltins.Globals(timeProvider ?? TimeProvider.System);
        foreach (var (name, value) in variables)
        {
            globals[name] = value is System.Text.Json.JsonElement e ? Values.FromJson(e) : value;
        }

        var output = new StringBuilder();
        var renderer = new Renderer();
        renderer.Run(_body, new Scope(globals, null), output);
        return output.ToString();
    }

    internal sealed class Scope(Dictionary<string, object?> variables, Scope? parent)
    {
        public Dictionary<string, object?> Variables { get; } = variables;

        public object? Lookup(string name)
        {
            for (var s = this; s is not null; s = s.Parent)
            {
                if (s.Variables.TryGetValue(name, out var v))
                {
                    return v;
                }
            }

            return Undefined.Instance;
        }

        public Scope? Parent { get; } = parent;

        public Scope Child() => new(new Dictionary<string, object?>(StringComparer.Ordinal), this);
    }

    private enum Flow
    {
        Normal,
        Break,
        Continue,
    }

    private sealed class Renderer
    {
        // Nested macro calls and loops; real templates stay far below this, a runaway recursion does not.
        private const int MaxDepth = 200;
        private int _depth;

        public Flow Run(List<Node> nodes, Scope scope, StringBuilder output)
        {
            foreach (var node in nodes)
            {
                var flow = Execute(node, scope, output);
                if (flow != Flow.Normal)
                {
                    return flow;
                }
            }

            return Flow.Normal;
        }

        private Flow Execute(Node node, Scope scope, StringBuilder output)
        {
            switch (node)
            {
                case TextNode t:
                    output.Append(t.Text);
                    return Flow.Normal;
                case OutputNode o:
                    output.Append(Values.Str(Eval(o.Value, scope)));
                    return Flow.Normal;
                case IfNode i:
                    foreach (var (condition, body) in i.Branches)
                    {
                        if (Values.Truthy(Eval(condition, scope)))
                        {
                            return Run(body, scope, output);
                        }
                    }

                    return i.Else is null ? Flow.Normal : Run(i.Else, scope, output);
                case ForNode f:
                    return ExecuteFor(f, scope, output);
                case SetNode s:
                    ExecuteSet(s, scope);
                    return Flow.Normal;
                case MacroNode m:
                    scope.Variables[m.Name] = MakeMacro(m, scope);
                    return Flow.Normal;
                case CallBlockNode cb:
                {
                    var caller = new Callable("caller", (_, _) =>
                    {
                        var sb = new StringBuilder();
                        Run(cb.Body, scope.Child(), sb);
                        return sb.ToString();
                    });
                    var (target, args, kwargs) = PrepareCall(cb.Call, scope);
                    kwargs["caller"] = caller;
                    output.Append(Values.Str(Invoke(cb.Call, target, args, kwargs)));
                    return Flow.Normal;
                }
                case BreakNode:
                    return Flow.Break;
                case ContinueNode:
                    return Flow.Continue;
                default:
                    throw new TemplateRenderException($"unknown node {node.GetType().Name}");
            }
        }

        private Flow ExecuteFor(ForNode f, Scope scope, StringBuilder output)
        {
            var source = Eval(f.Iterable, scope);
            var items = source is Dictionary<string, object?> d ? d.Keys.Cast<object?>().ToList() : Values.Iterate(source);
            if (f.Filter is not null)
            {
                items = items.Where(item =>
                {
                    var s = scope.Child();
                    Bind(f.Targets, item, s);
                    return Values.Truthy(Eval(f.Filter, s));
                }).ToList();
            }

            if (items.Count == 0)
            {
                return f.Else is null ? Flow.Normal : Run(f.Else, scope, output);
            }

            Enter();
            try
            {
                for (var i = 0; i < items.Count; i++)
                {
                    var inner = scope.Child();
                    Bind(f.Targets, items[i], inner);
                    inner.Variables["loop"] = LoopObject(items, i);
                    if (Run(f.Body, inner, output) == Flow.Break)
                    {
                        break;
                    }
                }
            }
            finally
            {
                _depth--;
            }

            return Flow.Normal;
        }

        private static Dictionary<string, object?> LoopObject(List<object?> items, int i) => new(StringComparer.Ordinal)
        {
            ["index"] = (long)(i + 1),
            ["index0"] = (long)i,
            ["revindex"] = (long)(items.Count - i),
            ["revindex0"] = (long)(items.Count - i - 1),
            ["first"] = i == 0,
            ["last"] = i == items.Count - 1,
            ["length"] = (long)items.Count,
            ["previtem"] = i > 0 ? items[i - 1] : Undefined.Instance,
            ["nextitem"] = i + 1 < items.Count ? items[i + 1] : Undefined.Instance,
            ["cycle"] = new Callable("cycle", (args, _) => args.Count == 0 ? Undefined.Instance : args[i % args.Count]),
        };

        private static void Bind(List<string> targets, object? item, Scope scope)
        {
            if (targets.Count == 1)
            {
                scope.Variables[targets[0]] = item;
                return;
            }

            var parts = Values.Iterate(item);
            if (parts.Count != targets.Count)
            {
                throw new TemplateRenderException($"cannot unpack {parts.Count} values into {targets.Count} names ({string.Join(", ", targets)})");
            }

            for (var k = 0; k < targets.Count; k++)
            {
                scope.Variables[targets[k]] = parts[k];
            }
        }

        private void ExecuteSet(SetNode s, Scope scope)
        {
            object? value;
            if (s.Block is not null)
            {
                var sb = new StringBuilder();
                Run(s.Block, scope, sb);
                value = sb.ToString();
            }
            else
            {
                value = Eval(s.Value!, scope);
            }

            if (s.Attribute is not null)
            {
                if (scope.Lookup(s.Targets[0]) is not Namespace ns)
                {
                    throw new TemplateRenderException($"cannot set '{s.Targets[0]}.{s.Attribute}': '{s.Targets[0]}' is not a namespace()");
                }

                ns.Attributes[s.Attribute] = value;
                return;
            }

            Bind(s.Targets, value, scope);
        }

        private Callable MakeMacro(MacroNode m, Scope definedIn) => new(m.Name, (args, kwargs) =>
        {
            var scope = definedIn.Child();
            for (var i = 0; i < m.Parameters.Count; i++)
            {
                var (name, def) = m.Parameters[i];
                scope.Variables[name] = i < args.Count ? args[i]
                    : kwargs.TryGetValue(name, out var kw) ? kw
                    : def is not null ? Eval(def, scope)
                    : Undefined.Instance;
            }

            scope.Variables["varargs"] = args.Skip(m.Parameters.Count).ToList();
            if (kwargs.TryGetValue("caller", out var caller) && !m.Parameters.Any(p => p.Name == "caller"))
            {
                scope.Variables["caller"] = caller;
            }
            var output = new StringBuilder();
            Enter();
            try
            {
                Run(m.Body, scope, output);
            }
            finally
            {
                _depth--;
            }

            return output.ToString();
        });

        private void Enter()
        {
            if (++_depth > MaxDepth)
            {
                _depth--;
                throw new TemplateRenderException($"the template nests loops or macro calls more than {MaxDepth} deep");
            }
        }

        public object? Eval(Expr expr, Scope scope)
        {
            switch (expr)
            {
                case Literal l:
                    return l.Value;
                case Variable v:
                    return scope.Lookup(v.Name);
                case ListExpr l:
                    return l.Items.Select(i => Eval(i, scope)).ToList();
                case TupleExpr t:
                    return t.Items.Select(i => Eval(i, scope)).ToList();
                case DictExpr d:
                {
                    var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, v) in d.Items)
                    {
                        dict[Values.Str(Eval(k, scope))] = Eval(v, scope);
                    }

                    return dict;
                }

                case GetAttr a:
                    return JinjaBuiltins.GetAttribute(Eval(a.Target, scope), a.Name);
                case GetItem g:
                    return JinjaBuiltins.GetItem(Eval(g.Target, scope), Eval(g.Index, scope));
                case Slice s:
                    return JinjaBuiltins.Slice(Eval(s.Target, scope), Opt(s.Start, scope), Opt(s.Stop, scope), Opt(s.Step, scope));
                case Call c:
                {
                    var (target, args, kwargs) = PrepareCall(c, scope);
                    return Invoke(c, target, args, kwargs);
                }

                case Filter f:
                {
                    var args = f.Args.Select(a => Eval(a, scope)).ToList();
                    var kwargs = f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope), StringComparer.Ordinal);
                    return JinjaBuiltins.ApplyFilter(f.Name, Eval(f.Target, scope), args, kwargs, this, scope);
                }

                case Test t:
                {
                    var result = JinjaBuiltins.ApplyTest(t.Name, Eval(t.Target, scope), t.Args.Select(a => Eval(a, scope)).ToList());
                    return t.Negated ? !result : result;
                }

                case Unary u:
                {
                    var v = Eval(u.Operand, scope);
                    return u.Op switch
                    {
                        "not" => !Values.Truthy(v),
                        "-" => v is long l ? -l : (object)(-Values.ToDouble(v)),
                        _ => v,
                    };
                }

                case Binary b:
                    return EvalBinary(b, scope);
                case Conditional c:
                    return Values.Truthy(Eval(c.Condition, scope)) ? Eval(c.Then, scope) : c.Else is null ? Undefined.Instance : Eval(c.Else, scope);
                default:
                    throw new TemplateRenderException($"unknown expression {expr.GetType().Name}");
            }
        }

        private (object? Target, List<object?> Args, Dictionary<string, object?> Kwargs) PrepareCall(Call c, Scope scope)
        {
            var target = Eval(c.Target, scope);
            var args = new List<object?>();
            foreach (var a in c.Args)
            {
                if (a is Unary { Op: "*" } splat)
                {
                    args.AddRange(Values.Iterate(Eval(splat.Operand, scope)));
                }
                else
                {
                    args.Add(Eval(a, scope));
                }
            }

            return (target, args, c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope), StringComparer.Ordinal));
        }

        private static object? Invoke(Call c, object? target, List<object?> args, Dictionary<string, object?> kwargs) => target switch
        {
            Callable f => f.Invoke(args, kwargs),
            Undefined => throw new TemplateRenderException($"'{Describe(c.Target)}' is undefined and cannot be called"),
            _ => throw new TemplateRenderException($"'{Describe(c.Target)}' is a {Values.TypeName(target)}, not a function"),
        };

        private object? Opt(Expr? e, Scope scope) => e is null ? null : Eval(e, scope);

        private object? EvalBinary(Binary b, Scope scope)
        {
            if (b.Op == "and")
            {
                var l = Eval(b.Left, scope);
                return Values.Truthy(l) ? Eval(b.Right, scope) : l;
            }

            if (b.Op == "or")
            {
                var l = Eval(b.Left, scope);
                return Values.Truthy(l) ? l : Eval(b.Right, scope);
            }

            var left = Eval(b.Left, scope);
            var right = Eval(b.Right, scope);
            switch (b.Op)
            {
                case "==":
                    return Values.Equal(left, right);
                case "!=":
                    return !Values.Equal(left, right);
                case "<":
                    return Values.Compare(left, right) < 0;
                case ">":
                    return Values.Compare(left, right) > 0;
                case "<=":
                    return Values.Compare(left, right) <= 0;
                case ">=":
                    return Values.Compare(left, right) >= 0;
                case "in":
                    return JinjaBuiltins.Contains(right, left);
                case "not in":
                    return !JinjaBuiltins.Contains(right, left);
                case "~":
                    return Values.Str(left) + Values.Str(right);
                case "+":
                    return (left, right) switch
                    {
                        (string x, string y) => x + y,
                        (List<object?> x, List<object?> y) => x.Concat(y).ToList(),
                        (long x, long y) => x + y,
                        _ when Values.IsNumber(left) && Values.IsNumber(right) => Values.ToDouble(left) + Values.ToDouble(right),
                        _ => throw new TemplateRenderException($"cannot add {Values.TypeName(left)} and {Values.TypeName(right)} ({Describe(b.Left)} + {Describe(b.Right)})"),
                    };
                case "-":
                    return left is long lx && right is long ly ? lx - ly : (object)(Values.ToDouble(left) - Values.ToDouble(right));
                case "*":
                    return (left, right) switch
                    {
                        (string s, long n) => string.Concat(Enumerable.Repeat(s, (int)Math.Max(0, n))),
                        (long x, long y) => x * y,
                        _ => Values.ToDouble(left) * Values.ToDouble(right),
                    };
                case "/":
                    return Values.ToDouble(left) / Values.ToDouble(right);
                case "//":
                    return left is long fx && right is long fy
                        ? (long)Math.Floor((double)fx / fy)
                        : (object)Math.Floor(Values.ToDouble(left) / Values.ToDouble(right));
                case "%":
                    if (left is long mx && right is long my)
                    {
                        return ((mx % my) + my) % my;
                    }

                    if (left is string)
                    {
                        throw new TemplateRenderException("printf-style string formatting with % is not supported; use ~ or format");
                    }

                    var dl = Values.ToDouble(left);
                    var dr = Values.ToDouble(right);
                    return dl - (dr * Math.Floor(dl / dr));
                case "**":
                    return left is long px && right is long py && py >= 0 ? (long)Math.Pow(px, py) : (object)Math.Pow(Values.ToDouble(left), Values.ToDouble(right));
                default:
                    throw new TemplateRenderException($"unknown operator {b.Op}");
            }
        }

        private static string Describe(Expr e) => e switch
        {
            Variable v => v.Name,
            GetAttr a => Describe(a.Target) + "." + a.Name,
            GetItem g => Describe(g.Target) + "[...]",
            Call c => Describe(c.Target) + "(...)",
            Literal l => Values.Repr(l.Value),
            _ => "expression",
        };
    }
}
