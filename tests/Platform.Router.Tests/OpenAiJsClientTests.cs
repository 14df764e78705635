// The official OpenAI JavaScript client (npm "openai", run by node) reads the
// router's streams unchanged when they carry keep-alive comment lines: a chat
// and a text completion whose worker reports prefill progress for over a second
// while the router sends a comment every 200 ms. The .NET client's side of the
// same check is in KeepAliveTests.
using System.Diagnostics;
using System.Text.Json;

namespace Platform.Router.Tests;

[Collection(nameof(KeepAliveTests))]
public sealed class OpenAiJsClientTests
{
    private static string ClientDir()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Platform.sln"))) dir = dir.Parent;
        if (dir is null) throw new InvalidOperationException("Platform.sln not found above " + AppContext.BaseDirectory);
        return Path.Combine(dir.FullName, "tests", "Platform.Router.Tests", "JsClient");
    }

    [Fact]
    public async Task The_JavaScript_client_streams_chat_and_completions_through_keep_alive_comments()
    {
        string clientDir = ClientDir();
        Assert.True(File.Exists(Path.Combine(clientDir, "node_modules", "openai", "package.json")),
            $"the OpenAI JavaScript client is not installed in {clientDir}; run scripts/fetch-test-clients.sh (./test.sh does).");

        int sawComments = 0;
        await using var worker = await ScriptedWorker.StartAsync(async (request, stream, _, ct) =>
        {
            int total = request.PromptTokenIds.Count * 100;
            for (int i = 0; i <= 12; i++)
            {
                await stream.WriteAsync(ScriptedWorker.Progress(i * total / 12, total), ct);
                await Task.Delay(100, ct);
            }
            await ScriptedWorker.TokensAsync(request, stream, 3);
        });
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], "--Router:KeepAliveIntervalMs", "200");
        try
        {
            await router.WaitForWorkers(1);
            // The same stream, read raw: it does carry the comments the client has to skip.
            using (var raw = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent(JsonSerializer.Serialize(new { model = "tiny", prompt = "a long document", max_tokens = 3, stream = true }),
                    System.Text.Encoding.UTF8, "application/json"),
            })
            {
                using var response = await router.Http.SendAsync(raw);
                sawComments = (await response.Content.ReadAsStringAsync()).Split('\n').Count(l => l.StartsWith(": prefill ", StringComparison.Ordinal));
            }
            Assert.True(sawComments >= 3, $"the raw stream carried {sawComments} progress comments");

            var start = new ProcessStartInfo("node", [Path.Combine(clientDir, "stream.mjs"), router.Address + "/v1", "tiny"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = clientDir,
            };
            using var node = Process.Start(start)!;
            var stdout = node.StandardOutput.ReadToEndAsync();
            var stderr = node.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await node.WaitForExitAsync(timeout.Token);
            Assert.True(node.ExitCode == 0, $"node exited {node.ExitCode}: {await stderr}");

            var result = JsonDocument.Parse(await stdout).RootElement;
            foreach (var kind in new[] { "chat", "completion" })
            {
                Assert.Equal("t0 t1 t2 ", result.GetProperty(kind).GetProperty("text").GetString());
                Assert.Equal("length", result.GetProperty(kind).GetProperty("finish").GetString());
            }
        }
        finally
        {
            await router.DisposeAsync();
        }
    }
}
