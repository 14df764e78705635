// `platform up` as a user runs it: a real CLI process that starts two worker
// processes and the router on loopback; the official OpenAI .NET client talks
// to it (chat, streaming chat, completions), and SIGTERM stops every process.
using System.ClientModel;
using System.Diagnostics;
using System.Runtime.InteropServices;
using OpenAI;
using OpenAI.Chat;
using Platform.Core.Models;

namespace Platform.EndToEnd.Tests;

public sealed partial class PlatformUpTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("platform-up-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { /* a child may still hold a file for a moment */ }
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public async Task Platform_up_serves_the_openai_api_and_stops_every_process_on_sigterm()
    {
        string model = Path.Combine(_dir, "tiny");
        RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", Seed = 3 });
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "platform.dll"), "up", "--model", model, "--workers", "2", "--port", "0" })
            psi.ArgumentList.Add(a);
        using var up = Process.Start(psi)!;
        var url = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        up.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            output.Enqueue(e.Data);
            if (e.Data.StartsWith("PLATFORM_UP_URL ", StringComparison.Ordinal)) url.TrySetResult(e.Data["PLATFORM_UP_URL ".Length..].Trim());
        };
        up.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.Enqueue(e.Data); };
        up.BeginOutputReadLine();
        up.BeginErrorReadLine();
        try
        {
            var ready = await Task.WhenAny(url.Task, up.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(ready == url.Task, "platform up did not become ready:\n" + string.Join("\n", output));
            string baseUrl = await url.Task;

            var client = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(baseUrl + "/v1") });
            var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
            ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Hello there")], options);
            Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
            Assert.Equal(8, completion.Usage.OutputTokenCount);
            Assert.True(completion.Usage.InputTokenCount > 3);

            var streamed = new System.Text.StringBuilder();
            int updates = 0;
            await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("Hello there")], options))
            {
                foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
                updates++;
            }
            Assert.True(updates >= 2);
            // Greedy decoding: streaming and non-streaming produce the same text.
            Assert.Equal(completion.Content[0].Text, streamed.ToString());
        }
        finally
        {
            Assert.Equal(0, Kill(up.Id, 15));
            bool exited = up.WaitForExit(60_000);
            Assert.True(exited, "platform up did not stop on SIGTERM");
        }
        // No worker or router of this model is left running.
        await Task.Delay(500);
        var orphans = Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(p => int.TryParse(p, out _))
            .Where(p => { try { return File.ReadAllText($"/proc/{p}/cmdline").Contains(model, StringComparison.Ordinal); } catch (IOException) { return false; } catch (UnauthorizedAccessException) { return false; } })
            .ToList();
        Assert.True(orphans.Count == 0, "left running: " + string.Join("; ", orphans.Select(p => File.ReadAllText($"/proc/{p}/cmdline").Replace('\0', ' '))));
    }
}
