// The router renders the model's own Jinja chat template; a model without one refuses chat with a
// 400 that says so while its completions keep working, and --chat-template overrides the model's
// template (a template that raises gets its message back as a 400). The routers here share the
// two-worker fixture's workers and read a copy of the model's text files.
using System.Text.Json.Nodes;

namespace Platform.Router.Tests;

[Collection("two-workers")]
public sealed class ChatTemplateRouterTests(TwoWorkerFixture f)
{
    private string CopyModelText(string name, bool keepTemplate)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"platform-chat-template-{name}-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        foreach (var file in new[] { "config.json", "tokenizer.json", "tokenizer_config.json" })
        {
            File.Copy(Path.Combine(f.ModelDir, file), Path.Combine(dir, file), overwrite: true);
        }

        if (!keepTemplate)
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!.AsObject();
            config.Remove("chat_template");
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        }

        return dir;
    }

    [Fact]
    public async Task A_model_without_a_chat_template_refuses_chat_with_a_reason_and_serves_completions()
    {
        await using var router = await RouterHost.StartAsync(CopyModelText("none", keepTemplate: false), [f.A.Address, f.B.Address]);
        await router.WaitForWorkers(2);
        int before = f.GenerateCalls;

        var (status, body, _) = await router.PostAsync("/v1/chat/completions", """{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2}""");
        Assert.Equal(400, status);
        ErrorShape.Assert(body, "messages");
        Assert.Contains("no chat template", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(before, f.GenerateCalls);

        var (ok, _, _) = await router.PostAsync("/v1/completions", """{"model":"tiny","prompt":"hello","max_tokens":2,"ignore_eos":true}""");
        Assert.Equal(200, ok);
    }

    [Fact]
    public async Task Chat_template_flag_overrides_the_model_template_and_its_exceptions_are_400s()
    {
        var template = Path.Combine(Path.GetTempPath(), $"platform-chat-template-{Environment.ProcessId}.jinja");
        await File.WriteAllTextAsync(template,
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}" +
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}");
        await using var router = await RouterHost.StartAsync(CopyModelText("flag", keepTemplate: true), [f.A.Address, f.B.Address], "--chat-template", template);
        await router.WaitForWorkers(2);

        var (status, body, _) = await router.PostAsync("/v1/chat/completions", """{"model":"tiny","messages":[{"role":"assistant","content":"x"}],"max_tokens":2}""");
        Assert.Equal(400, status);
        ErrorShape.Assert(body, "messages");
        Assert.Contains("Conversation must start with a user message", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);

        var (ok, reply, _) = await router.PostAsync("/v1/chat/completions", """{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"ignore_eos":true}""");
        Assert.Equal(200, ok);
        // "user: hi\nassistant:" is longer than Llama-3's header format would be for the same message.
        var model = Platform.Router.Model.ServedModel.Load(f.ModelDir, TimeProvider.System, template);
        Assert.Equal(model.Tokenizer.Encode("user: hi\nassistant:").Count, reply.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }
}
