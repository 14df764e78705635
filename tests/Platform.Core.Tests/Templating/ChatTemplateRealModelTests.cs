// The chat templates of real models (TestData/chat_templates/templates, see its README) rendered by
// our interpreter must equal what Hugging Face transformers renders: expected.json was produced by
// generate.py with Jinja2 configured as transformers configures it. Cases cover plain chats, system
// prompts, no generation prompt, wrong role order, tools, tool calls and documents; where the
// reference raised (raise_exception, or a Python error inside the template) we must refuse too.
using System.Text.Json;
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Templating;

public sealed class ChatTemplateRealModelTests
{
    internal sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;

        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }

    internal static string DataDir()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Platform.sln")))
        {
            dir = dir.Parent;
        }

        return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("Platform.sln not found above " + AppContext.BaseDirectory),
            "tests", "Platform.Core.Tests", "TestData", "chat_templates");
    }

    public static TheoryData<string> TemplateNames()
    {
        using var cases = JsonDocument.Parse(File.ReadAllText(Path.Combine(DataDir(), "cases.json")));
        var data = new TheoryData<string>();
        foreach (var t in cases.RootElement.GetProperty("templates").EnumerateObject())
        {
            data.Add(t.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(TemplateNames))]
    public void Renders_like_transformers(string name)
    {
        var dir = DataDir();
        using var cases = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "cases.json")));
        using var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")));
        var date = DateTimeOffset.Parse(cases.RootElement.GetProperty("date").GetString()! + "T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture);
        var tokens = cases.RootElement.GetProperty("templates").GetProperty(name).EnumerateObject()
            .Where(p => p.Value.ValueKind == JsonValueKind.String)
            .ToDictionary(p => p.Name, p => p.Value.GetString()!);
        var template = new JinjaChatTemplate(File.ReadAllText(Path.Combine(dir, "templates", name + ".jinja")), name, tokens, new FixedClock(date));

        var checkedCases = 0;
        foreach (var c in cases.RootElement.GetProperty("cases").EnumerateObject())
        {
            var want = expected.RootElement.GetProperty("results").GetProperty(name).GetProperty(c.Name);
            string Render() => template.Render(
                c.Value.GetProperty("messages"),
                c.Value.GetProperty("add_generation_prompt").GetBoolean(),
                c.Value.TryGetProperty("tools", out var tools) ? tools : null,
                c.Value.TryGetProperty("documents", out var documents) ? documents : null);

            if (want.TryGetProperty("output", out var output))
            {
                Assert.True(output.GetString() == Render(), $"{name}/{c.Name}: expected\n{output.GetString()}\n--- got\n{Render()}");
            }
            else
            {
                var ex = Assert.Throws<ChatTemplateRenderException>(Render);
                if (want.GetProperty("raised").GetBoolean())
                {
                    Assert.True(ex.RaisedByTemplate, $"{name}/{c.Name}: {ex.Message}");
                    Assert.Contains(want.GetProperty("error").GetString()!, ex.Message, StringComparison.Ordinal);
                }
            }

            checkedCases++;
        }

        Assert.Equal(7, checkedCases);
    }
}
