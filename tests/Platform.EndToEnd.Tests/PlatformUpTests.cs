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
        string model = TinyModel();
        var (up, url, output) = Launch("--model", model, "--workers", "2", "--port", "0", "--served-model-name", "tiny-chat");
        try
        {
            var ready = await Task.WhenAny(url.Task, up.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(ready == url.Task, "platform up did not become ready:\n" + string.Join("\n", output));
            string baseUrl = await url.Task;

            // --served-model-name: the name clients send (and /v1/models reports).
            using (var http = new HttpClient())
                Assert.Contains("\"id\":\"tiny-chat\"", await http.GetStringAsync(baseUrl + "/v1/models"), StringComparison.Ordinal);
            var client = new ChatClient("tiny-chat", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(baseUrl + "/v1") });
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
            up.Dispose();
        }
        // No worker or router of this model is left running.
        await Task.Delay(500);
        var orphans = Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(p => int.TryParse(p, out _))
            .Where(p => { try { return File.ReadAllText($"/proc/{p}/cmdline").Contains(model, StringComparison.Ordinal); } catch (IOException) { return false; } catch (UnauthorizedAccessException) { return false; } })
            .ToList();
        Assert.True(orphans.Count == 0, "left running: " + string.Join("; ", orphans.Select(p => File.ReadAllText($"/proc/{p}/cmdline").Replace('\0', ' '))));
    }

    [Fact]
    public async Task A_prompt_that_fits_on_no_single_worker_is_served_across_two_with_dist_attention()
    {
        string model = TinyModel();
        // 1,500 prompt tokens; each worker holds 1,024. The reference is one worker with room for everything.
        var prompt = Enumerable.Range(0, 1500).Select(i => (i * 37 + 11) % 500).ToArray();
        string body = System.Text.Json.JsonSerializer.Serialize(new { model = "tiny", prompt, max_tokens = 12, temperature = 0 });

        async Task<(string Text, int PromptTokens)> CompleteAsync(params string[] args)
        {
            var (up, url, output) = Launch(["--model", model, "--port", "0", .. args]);
            try
            {
                var ready = await Task.WhenAny(url.Task, up.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
                Assert.True(ready == url.Task, "platform up did not become ready:\n" + string.Join("\n", output));
                using var http = new HttpClient { BaseAddress = new Uri(await url.Task), Timeout = TimeSpan.FromMinutes(3) };
                using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
                using var response = await http.PostAsync("/v1/completions", content);
                string json = await response.Content.ReadAsStringAsync();
                Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {json}");
                var root = System.Text.Json.JsonDocument.Parse(json).RootElement;
                return (root.GetProperty("choices")[0].GetProperty("text").GetString()!, root.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            }
            finally
            {
                _ = Kill(up.Id, 15);
                up.WaitForExit(60_000);
                up.Dispose();
            }
        }

        var reference = await CompleteAsync("--workers", "1");
        var split = await CompleteAsync("--workers", "2", "--worker-kv-tokens", "1024");
        Assert.Equal(1500, split.PromptTokens);
        Assert.Equal(reference.Text, split.Text);

        // Without DistAttention the same request is refused at once with the sizes.
        var (alone, aloneUrl, aloneOutput) = Launch("--model", model, "--port", "0", "--workers", "2", "--worker-kv-tokens", "1024", "--dist-attention", "off");
        try
        {
            var ready = await Task.WhenAny(aloneUrl.Task, alone.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(ready == aloneUrl.Task, "platform up did not become ready:\n" + string.Join("\n", aloneOutput));
            using var http = new HttpClient { BaseAddress = new Uri(await aloneUrl.Task) };
            using var response = await http.PostAsync("/v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(400, (int)response.StatusCode);
            Assert.Contains("holds 1024", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        finally
        {
            _ = Kill(alone.Id, 15);
            alone.WaitForExit(60_000);
            alone.Dispose();
        }
    }

    [Fact]
    public async Task A_hub_model_is_downloaded_once_and_served_under_its_id()
    {
        await using var hub = await Platform.Testing.FakeHub.StartAsync(TinyModel(), "acme/tiny-chat");
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = hub.Endpoint.ToString(), ["HF_HOME"] = Path.Combine(_dir, "hf") };

        // `platform model download` prints the snapshot directory.
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "platform.dll"), "model", "download", "hf://acme/tiny-chat" }) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using (var download = Process.Start(psi)!)
        {
            string stdout = await download.StandardOutput.ReadToEndAsync();
            string stderr = await download.StandardError.ReadToEndAsync();
            await download.WaitForExitAsync();
            Assert.True(download.ExitCode == 0, stderr);
            Assert.Equal(Path.Combine(_dir, "hf", "hub", "models--acme--tiny-chat", "snapshots", hub.Commit), stdout.Trim());
            Assert.Equal(File.ReadAllBytes(Path.Combine(TinyModel(), "model.safetensors")), File.ReadAllBytes(Path.Combine(stdout.Trim(), "model.safetensors")));
        }
        Assert.Equal(1, hub.Count("storage:model.safetensors"));

        // `platform up --model hf://…` finds it in the cache and serves it as acme/tiny-chat.
        var (up, url, output) = Launch(env, "--model", "hf://acme/tiny-chat", "--workers", "1", "--port", "0", "--kv-tier", "off");
        try
        {
            var ready = await Task.WhenAny(url.Task, up.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(ready == url.Task, "platform up did not become ready:\n" + string.Join("\n", output));
            using var http = new HttpClient();
            Assert.Contains("\"id\":\"acme/tiny-chat\"", await http.GetStringAsync(await url.Task + "/v1/models"), StringComparison.Ordinal);
            var client = new ChatClient("acme/tiny-chat", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(await url.Task + "/v1") });
            // Greedy, so the answer is the same on every run: sampled, the random model could draw its EOS as
            // any of the 4 tokens, and an EOS drawn 4th ends with "stop" at 4 tokens (as in vLLM).
            ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Hello")], new ChatCompletionOptions { MaxOutputTokenCount = 4, Temperature = 0 });
            Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
            Assert.Equal(4, completion.Usage.OutputTokenCount);
            Assert.Equal(1, hub.Count("storage:model.safetensors"));
        }
        finally
        {
            _ = Kill(up.Id, 15); // it may have exited already (the assertion above says why)
            up.WaitForExit(60_000);
            up.Dispose();
        }

        // A wrong name: one clear line and a failing exit code, nothing started.
        var (bad, _, badOutput) = Launch(env, "--model", "hf://acme/missing", "--workers", "1", "--port", "0");
        await bad.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains(badOutput, l => l.Contains("no such model or revision", StringComparison.Ordinal));
        bad.Dispose();
    }

    private string TinyModel()
    {
        string model = Path.Combine(_dir, "tiny");
        if (!Directory.Exists(model)) RandomModelGenerator.Create(model, new RandomModelOptions { Preset = "tiny", Seed = 3 });
        return model;
    }

    [Fact]
    public async Task A_worker_that_dies_is_restarted_and_rejoins_while_the_rest_keeps_serving()
    {
        string model = TinyModel();
        var (up, url, output) = Launch("--model", model, "--workers", "2", "--port", "0", "--kv-tier", "off");
        try
        {
            var ready = await Task.WhenAny(url.Task, up.WaitForExitAsync(), Task.Delay(TimeSpan.FromMinutes(3)));
            Assert.True(ready == url.Task, "platform up did not become ready:\n" + string.Join("\n", output));
            string baseUrl = await url.Task;
            using var http = new HttpClient { BaseAddress = new Uri(baseUrl), Timeout = TimeSpan.FromMinutes(1) };

            int pid = WorkerPid(model, "worker-1") ?? throw new InvalidOperationException("no worker-1 process:\n" + string.Join("\n", output));
            Assert.Equal(0, Kill(pid, 9));

            // Every request sent meanwhile is served (the router leaves the dead worker out or retries elsewhere).
            for (int i = 0; i < 6; i++)
            {
                using var content = new StringContent(
                    System.Text.Json.JsonSerializer.Serialize(new { model = "tiny", prompt = $"while one is down {i}", max_tokens = 4 }), System.Text.Encoding.UTF8, "application/json");
                using var response = await http.PostAsync("/v1/completions", content);
                Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }

            // The worker comes back as a new process and rejoins the pool; platform up never stopped.
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (WorkerPid(model, "worker-1") is not { } restarted || restarted == pid)
            {
                Assert.True(DateTime.UtcNow < deadline, "worker-1 was not started again:\n" + string.Join("\n", output));
                await Task.Delay(100);
            }
            int inPool = 0;
            while (DateTime.UtcNow < deadline)
            {
                using var readyz = await http.GetAsync("/readyz");
                inPool = System.Text.Json.JsonDocument.Parse(await readyz.Content.ReadAsStringAsync()).RootElement.GetProperty("workers_in_pool").GetInt32();
                if (inPool == 2) break;
                await Task.Delay(250);
            }
            Assert.True(inPool == 2, "the killed worker did not rejoin the pool:\n" + string.Join("\n", output));
            Assert.False(up.HasExited, "platform up stopped when a worker died:\n" + string.Join("\n", output));
            Assert.Contains(output, line => line.Contains("worker-1 exited", StringComparison.Ordinal));
        }
        finally
        {
            _ = Kill(up.Id, 15);
            Assert.True(up.WaitForExit(60_000), "platform up did not stop on SIGTERM");
            up.Dispose();
        }
    }

    /// <summary>The process id of the named worker of a `platform up` serving <paramref name="model"/>; null while there is none.</summary>
    private static int? WorkerPid(string model, string workerId)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (argv.Any(a => a.EndsWith("platform-worker.dll", StringComparison.Ordinal)) && argv.Contains(model)
                && Array.IndexOf(argv, "--worker-id") is int at and >= 0 && at + 1 < argv.Length && argv[at + 1] == workerId)
                return pid;
        }
        return null;
    }

    /// <summary>Starts `platform up` with <paramref name="args"/>; the URL completes when it prints PLATFORM_UP_URL.</summary>
    private static (Process Up, TaskCompletionSource<string> Url, System.Collections.Concurrent.ConcurrentQueue<string> Output) Launch(params string[] args) =>
        Launch(new Dictionary<string, string>(), args);

    private static (Process Up, TaskCompletionSource<string> Url, System.Collections.Concurrent.ConcurrentQueue<string> Output) Launch(
        IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "platform.dll"));
        psi.ArgumentList.Add("up");
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        var up = Process.Start(psi)!;
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
        return (up, url, output);
    }
}
