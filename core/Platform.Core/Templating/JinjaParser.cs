// Segments → syntax tree. Expressions follow Jinja's precedence (low to high): conditional
// "a if c else b", or, and, not, comparisons and "in", + -, ~, * / // %, **, unary - +, then
// postfix .attr [index] [a:b:c] (call) and the filter/test chain "| f(...)" and "is [not] t(...)".
// Statements: if/elif/else, for (tuple targets, "if" filter, else), set (plain, namespace attribute,
// block), macro, call blocks, break/continue, and Hugging Face's {% generation %} marker (rendered
// transparently). Calls accept *list unpacking.
namespace Platform.Core.Templating;

/// <summary>The template text is not valid Jinja (at a character offset).</summary>
public sealed class TemplateSyntaxException : Exception
{
    public TemplateSyntaxException(string message, int position)
        : base($"{message} (at character {position} of the template)")
    {
        Position = position;
    }

    public int Position { get; }
}

internal abstract record Node;

internal sealed record TextNode(string Text) : Node;

internal sealed record OutputNode(Expr Value) : Node;

internal sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else) : Node;

internal sealed record ForNode(List<string> Targets, Expr Iterable, Expr? Filter, List<Node> Body, List<Node>? Else) : Node;

internal sealed record SetNode(List<string> Targets, string? Attribute, Expr? Value, List<Node>? Block) : Node;

internal sealed record MacroNode(string Name, List<(string Name, Expr? Default)> Parameters, List<Node> Body) : Node;

/// <summary>{% call m(args) %}body{% endcall %}: m runs with caller() rendering the body.</summary>
internal sealed record CallBlockNode(Call Call, List<Node> Body) : Node;

internal sealed record BreakNode : Node;

internal sealed record ContinueNode : Node;

internal abstract record Expr(int Position);

internal sealed record Literal(object? Value, int Position) : Expr(Position);

internal sealed record Variable(string Name, int Position) : Expr(Position);

internal sealed record ListExpr(List<Expr> Items, int Position) : Expr(Position);

internal sealed record TupleExpr(List<Expr> Items, int Position) : Expr(Position);

internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Position) : Expr(Position);

internal sealed record GetAttr(Expr Target, string Name, int Position) : Expr(Position);

internal sealed record GetItem(Expr Target, Expr Index, int Position) : Expr(Position);

internal sealed record Slice(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Position) : Expr(Position);

internal sealed record Call(Expr Target, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Position) : Expr(Position);

internal sealed record Filter(Expr Target, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Position) : Expr(Position);

internal sealed record Test(Expr Target, string Name, List<Expr> Args, bool Negated, int Position) : Expr(Position);

internal sealed record Binary(string Op, Expr Left, Expr Right, int Position) : Expr(Position);

internal sealed record Unary(string Op, Expr Operand, int Position) : Expr(Position);

internal sealed record Conditional(Expr Condition, Expr Then, Expr? Else, int Position) : Expr(Position);

internal sealed class JinjaParser
{
    private readonly List<Segment> _segments;
    private int _segment;
    private List<Token> _tokens = [];
    private int _pos;

    private JinjaParser(List<Segment> segments)
    {
        _segments = segments;
    }

    public static List<Node> Parse(string source)
    {
        var parser = new JinjaParser(JinjaLexer.Lex(source));
        var body = parser.ParseBody([], out var end);
        if (end is not null)
        {
            throw new TemplateSyntaxException($"unexpected {{% {end} %}}", parser._segments[parser._segment - 1].Position);
        }

        return body;
    }

    /// <summary>Parses nodes until a statement whose first word is in <paramref name="terminators"/> (returned in end) or the end.</summary>
    private List<Node> ParseBody(string[] terminators, out string? end)
    {
        var nodes = new List<Node>();
        while (_segment < _segments.Count)
        {
            var seg = _segments[_segment++];
            switch (seg.Kind)
            {
                case SegmentKind.Text:
                    nodes.Add(new TextNode(seg.Text));
                    break;
                case SegmentKind.Expression:
                    Start(seg);
                    nodes.Add(new OutputNode(ParseExpression()));
                    ExpectEnd();
                    break;
                default:
                    Start(seg);
                    var word = Peek.Kind == TokenKind.Name ? Peek.Text : throw Error("expected a statement name");
                    if (terminators.Contains(word))
                    {
                        end = word;
                        return nodes;
                    }

                    Next();
                    nodes.Add(ParseStatement(word, seg));
                    break;
            }
        }

        if (terminators.Length > 0)
        {
            throw new TemplateSyntaxException($"the template ends before {{% {terminators[^1]} %}}", _segments.Count > 0 ? _segments[^1].Position : 0);
        }

        end = null;
        return nodes;
    }

    private Node ParseStatement(string word, Segment seg)
    {
        switch (word)
        {
            case "if":
            {
                var branches = new List<(Expr, List<Node>)>();
                var condition = ParseExpression();
                ExpectEnd();
                List<Node>? elseBody = null;
                while (true)
                {
                    var body = ParseBody(["elif", "else", "endif"], out var end);
                    branches.Add((condition, body));
                    if (end == "elif")
                    {
                        Next();
                        condition = ParseExpression();
                        ExpectEnd();
                        continue;
                    }

                    if (end == "else")
                    {
                        Next();
                        ExpectEnd();
                        elseBody = ParseBody(["endif"], out _);
                    }

                    Next();
                    ExpectEnd();
                    return new IfNode(branches, elseBody);
                }
            }

            case "for":
            {
                var targets = new List<string> { ExpectName() };
                while (Peek.IsOp(","))
                {
                    Next();
                    targets.Add(ExpectName());
                }

                if (!Next().IsName("in"))
                {
                    throw Error("expected 'in' in a for loop");
                }

                var iterable = ParseConditionalless();
                Expr? filter = null;
                if (Peek.IsName("if"))
                {
                    Next();
                    filter = ParseExpression();
                }

                if (Peek.IsName("recursive"))
                {
                    throw Error("recursive loops are not supported");
                }

                ExpectEnd();
                var body = ParseBody(["else", "endfor"], out var end);
                List<Node>? elseBody = null;
                if (end == "else")
                {
                    Next();
                    ExpectEnd();
                    elseBody = ParseBody(["endfor"], out _);
                }

                Next();
                ExpectEnd();
                return new ForNode(targets, iterable, filter, body, elseBody);
            }

            case "set":
            {
                var targets = new List<string> { ExpectName() };
                string? attribute = null;
                if (Peek.IsOp("."))
                {
                    Next();
                    attribute = ExpectName();
                }

                while (Peek.IsOp(","))
                {
                    Next();
                    targets.Add(ExpectName());
                }

                if (Peek.Kind == TokenKind.End)
                {
                    ExpectEnd();
                    var block = ParseBody(["endset"], out _);
                    Next();
                    ExpectEnd();
                    return new SetNode(targets, attribute, null, block);
                }

                if (!Next().IsOp("="))
                {
                    throw Error("expected '=' in set");
                }

                var value = ParseTupleOrExpression();
                ExpectEnd();
                return new SetNode(targets, attribute, value, null);
            }

            case "macro":
            {
                var name = ExpectName();
                var parameters = new List<(string, Expr?)>();
                Expect("(");
                while (!Peek.IsOp(")"))
                {
                    var p = ExpectName();
                    Expr? def = null;
                    if (Peek.IsOp("="))
                    {
                        Next();
                        def = ParseExpression();
                    }

                    parameters.Add((p, def));
                    if (!Peek.IsOp(")"))
                    {
                        Expect(",");
                    }
                }

                Next();
                ExpectEnd();
                var body = ParseBody(["endmacro"], out _);
                Next();
                ExpectEnd();
                return new MacroNode(name, parameters, body);
            }

            case "call":
            {
                var call = ParsePostfix(ParsePrimary()) as Call ?? throw new TemplateSyntaxException("{% call %} needs a macro call", seg.Position);
                ExpectEnd();
                var body = ParseBody(["endcall"], out _);
                Next();
                ExpectEnd();
                return new CallBlockNode(call, body);
            }

            case "break":
                ExpectEnd();
                return new BreakNode();
            case "continue":
                ExpectEnd();
                return new ContinueNode();
            case "generation":
            {
                ExpectEnd();
                var body = ParseBody(["endgeneration"], out _);
                Next();
                ExpectEnd();
                return new IfNode([(new Literal(true, seg.Position), body)], null);
            }

            default:
                throw new TemplateSyntaxException($"unknown statement '{word}'", seg.Position);
        }
    }

    private Token Peek => _tokens[_pos];

    private void Start(Segment seg)
    {
        _tokens = seg.Tokens;
        _pos = 0;
    }

    private Token Next() => _tokens[_pos < _tokens.Count - 1 ? _pos++ : _pos];

    private TemplateSyntaxException Error(string message) => new($"{message}, found '{(Peek.Kind == TokenKind.End ? "end of tag" : Peek.Text)}'", Peek.Position);

    private void ExpectEnd()
    {
        if (Peek.Kind != TokenKind.End)
        {
            throw Error("expected the end of the tag");
        }
    }

    private void Expect(string op)
    {
        if (!Peek.IsOp(op))
        {
            throw Error($"expected '{op}'");
        }

        Next();
    }

    private string ExpectName() => Peek.Kind == TokenKind.Name ? Next().Text : throw Error("expected a name");

    private Expr ParseTupleOrExpression()
    {
        var first = ParseExpression();
        if (!Peek.IsOp(","))
        {
            return first;
        }

        var items = new List<Expr> { first };
        while (Peek.IsOp(","))
        {
            Next();
            items.Add(ParseExpression());
        }

        return new TupleExpr(items, first.Position);
    }

    public Expr ParseExpression()
    {
        var value = ParseOr();
        while (Peek.IsName("if"))
        {
            var pos = Next().Position;
            var condition = ParseOr();
            Expr? otherwise = null;
            if (Peek.IsName("else"))
            {
                Next();
                otherwise = ParseExpression();
            }

            value = new Conditional(condition, value, otherwise, pos);
        }

        return value;
    }

    private Expr ParseConditionalless() => ParseOr();

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Peek.IsName("or"))
        {
            var pos = Next().Position;
            left = new Binary("or", left, ParseAnd(), pos);
        }

        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Peek.IsName("and"))
        {
            var pos = Next().Position;
            left = new Binary("and", left, ParseNot(), pos);
        }

        return left;
    }

    private Expr ParseNot()
    {
        if (Peek.IsName("not"))
        {
            var pos = Next().Position;
            return new Unary("not", ParseNot(), pos);
        }

        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var left = ParseAdd();
        while (true)
        {
            var t = Peek;
            if (t.Kind == TokenKind.Operator && t.Text is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                Next();
                left = new Binary(t.Text, left, ParseAdd(), t.Position);
            }
            else if (t.IsName("in"))
            {
                Next();
                left = new Binary("in", left, ParseAdd(), t.Position);
            }
            else if (t.IsName("not") && _pos + 1 < _tokens.Count && _tokens[_pos + 1].IsName("in"))
            {
                Next();
                Next();
                left = new Binary("not in", left, ParseAdd(), t.Position);
            }
            else
            {
                return left;
            }
        }
    }

    private Expr ParseAdd()
    {
        var left = ParseConcat();
        while (Peek.Kind == TokenKind.Operator && Peek.Text is "+" or "-")
        {
            var t = Next();
            left = new Binary(t.Text, left, ParseConcat(), t.Position);
        }

        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMul();
        while (Peek.IsOp("~"))
        {
            var t = Next();
            left = new Binary("~", left, ParseMul(), t.Position);
        }

        return left;
    }

    private Expr ParseMul()
    {
        var left = ParsePow();
        while (Peek.Kind == TokenKind.Operator && Peek.Text is "*" or "/" or "//" or "%")
        {
            var t = Next();
            left = new Binary(t.Text, left, ParsePow(), t.Position);
        }

        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary();
        while (Peek.IsOp("**"))
        {
            var t = Next();
            left = new Binary("**", left, ParseUnary(), t.Position);
        }

        return left;
    }

    private Expr ParseUnary()
    {
        if (Peek.Kind == TokenKind.Operator && Peek.Text is "-" or "+")
        {
            var t = Next();
            return new Unary(t.Text, ParseUnary(), t.Position);
        }

        return ParseFilters(ParsePostfix(ParsePrimary()));
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.String:
            {
                var text = t.Text;
                while (Peek.Kind == TokenKind.String)
                {
                    text += Next().Text;
                }

                return new Literal(text, t.Position);
            }

            case TokenKind.Integer:
                return new Literal(long.Parse(t.Text, System.Globalization.CultureInfo.InvariantCulture), t.Position);
            case TokenKind.Float:
                return new Literal(double.Parse(t.Text, System.Globalization.CultureInfo.InvariantCulture), t.Position);
            case TokenKind.Name:
                return t.Text switch
                {
                    "true" or "True" => new Literal(true, t.Position),
                    "false" or "False" => new Literal(false, t.Position),
                    "none" or "None" => new Literal(null, t.Position),
                    _ => new Variable(t.Text, t.Position),
                };
            case TokenKind.Operator when t.Text == "(":
            {
                if (Peek.IsOp(")"))
                {
                    Next();
                    return new TupleExpr([], t.Position);
                }

                var first = ParseExpression();
                if (Peek.IsOp(")"))
                {
                    Next();
                    return first;
                }

                var items = new List<Expr> { first };
                while (Peek.IsOp(","))
                {
                    Next();
                    if (Peek.IsOp(")"))
                    {
                        break;
                    }

                    items.Add(ParseExpression());
                }

                Expect(")");
                return new TupleExpr(items, t.Position);
            }

            case TokenKind.Operator when t.Text == "[":
            {
                var items = new List<Expr>();
                while (!Peek.IsOp("]"))
                {
                    items.Add(ParseExpression());
                    if (!Peek.IsOp("]"))
                    {
                        Expect(",");
                    }
                }

                Next();
                return new ListExpr(items, t.Position);
            }

            case TokenKind.Operator when t.Text == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!Peek.IsOp("}"))
                {
                    var key = ParseExpression();
                    Expect(":");
                    items.Add((key, ParseExpression()));
                    if (!Peek.IsOp("}"))
                    {
                        Expect(",");
                    }
                }

                Next();
                return new DictExpr(items, t.Position);
            }

            default:
                _pos--;
                throw Error("expected a value");
        }
    }

    private Expr ParsePostfix(Expr target)
    {
        while (true)
        {
            var t = Peek;
            if (t.IsOp("."))
            {
                Next();
                var name = Peek.Kind is TokenKind.Name or TokenKind.Integer ? Next().Text : throw Error("expected an attribute name");
                target = new GetAttr(target, name, t.Position);
            }
            else if (t.IsOp("["))
            {
                Next();
                Expr? start = null;
                if (!Peek.IsOp(":"))
                {
                    start = ParseExpression();
                }

                if (Peek.IsOp(":"))
                {
                    Next();
                    Expr? stop = null, step = null;
                    if (!Peek.IsOp("]") && !Peek.IsOp(":"))
                    {
                        stop = ParseExpression();
                    }

                    if (Peek.IsOp(":"))
                    {
                        Next();
                        if (!Peek.IsOp("]"))
                        {
                            step = ParseExpression();
                        }
                    }

                    Expect("]");
                    target = new Slice(target, start, stop, step, t.Position);
                }
                else
                {
                    Expect("]");
                    target = new GetItem(target, start!, t.Position);
                }
            }
            else if (t.IsOp("("))
            {
                Next();
                var (args, kwargs) = ParseArguments();
                target = new Call(target, args, kwargs, t.Position);
            }
            else
            {
                return target;
            }
        }
    }

    /// <summary>After '(' up to and including ')'.</summary>
    private (List<Expr>, List<(string, Expr)>) ParseArguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!Peek.IsOp(")"))
        {
            if (Peek.Kind == TokenKind.Name && _pos + 1 < _tokens.Count && _tokens[_pos + 1].IsOp("="))
            {
                var name = Next().Text;
                Next();
                kwargs.Add((name, ParseExpression()));
            }
            else if (Peek.IsOp("*"))
            {
                // f(*list): the list's items become positional arguments.
                var star = Next();
                args.Add(new Unary("*", ParseExpression(), star.Position));
            }
            else
            {
                args.Add(ParseExpression());
            }

            if (!Peek.IsOp(")"))
            {
                Expect(",");
            }
        }

        Next();
        return (args, kwargs);
    }

    private Expr ParseFilters(Expr target)
    {
        while (true)
        {
            var t = Peek;
            if (t.IsOp("|"))
            {
                Next();
                var name = ExpectName();
                List<Expr> args = [];
                List<(string, Expr)> kwargs = [];
                if (Peek.IsOp("("))
                {
                    Next();
                    (args, kwargs) = ParseArguments();
                }

                target = new Filter(target, name, args, kwargs, t.Position);
            }
            else if (t.IsName("is"))
            {
                Next();
                var negated = false;
                if (Peek.IsName("not"))
                {
                    Next();
                    negated = true;
                }

                var name = Peek.Kind == TokenKind.Name ? Next().Text
                    : Peek.IsOp("==") ? Next().Text
                    : throw Error("expected a test name");
                name = name switch { "none" or "None" => "none", "true" or "True" => "true", "false" or "False" => "false", _ => name };
                List<Expr> args = [];
                if (Peek.IsOp("("))
                {
                    Next();
                    (args, _) = ParseArguments();
                }
                else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                         || (Peek.Kind == TokenKind.Name && !(Peek.Text is "and" or "or" or "else" or "if" or "in" or "not" or "is")))
                {
                    args = [ParsePostfix(ParsePrimary())];
                }

                target = new Test(target, name, args, negated, t.Position);
            }
            else
            {
                return target;
            }
        }
    }
}
