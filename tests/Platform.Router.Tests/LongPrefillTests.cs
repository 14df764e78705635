// Long prompts through the router, on a virtual clock against scripted gRPC
// workers: the wait for a first token is bounded by the worker's silence, not by
// the prompt's length. Progress reports keep a five-minute prefill alive and are
// never retried; silence mid-prefill is a timeout that moves the request to
// another worker (or a 504 when there is none); streamed clients see keep-alive
// comments with the progress at their interval; a request's own deadline ends it.
using System.Text;
using System.Text.Json;
using Grpc.Core;
using Platform.Core.Protos;

namespace Platform.Router.Tests;

[Collection(nameof(KeepAliveTests))]
public sealed class LongPrefillTests
{
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(100);

    /// <summary>Progress every 5 s (virtual) for <paramref name="prefill"/>, then <paramref name="tokens"/> tokens.</summary>
    private static GenerateScript ProgressThenTokens(VirtualClock clock, TimeSpan prefill, int tokens = 3) => async (request, stream, _, ct) =>
    {
        var start = clock.Time.GetUtcNow();
        int total = request.PromptTokenIds.Count * 1000;
        await stream.WriteAsync(ScriptedWorker.Progress(0, total, queued: true), ct);
        while (clock.Time.GetUtcNow() - start < prefill)
        {
            await Task.Delay(TimeSpan.FromSeconds(5), clock.Time, ct);
            double done = Math.Min(1, (clock.Time.GetUtcNow() - start) / prefill);
            await stream.WriteAsync(ScriptedWorker.Progress((int)(done * total), total), ct);
        }
        await ScriptedWorker.TokensAsync(request, stream, tokens);
    };

    private static async Task<List<string>> StreamLinesAsync(RouterHost router, object body, string? timeout = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"),
        };
        if (timeout is not null) request.Headers.Add("x-request-timeout", timeout);
        using var response = await router.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)response.StatusCode);
        var lines = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line) if (line.Length > 0) lines.Add(line);
        return lines;
    }

    private static string Texts(IEnumerable<string> lines) => string.Concat(lines
        .Where(l => l.StartsWith("data: {", StringComparison.Ordinal))
        .Select(l => JsonDocument.Parse(l[6..]).RootElement)
        .Where(e => e.TryGetProperty("choices", out var c) && c.GetArrayLength() > 0)
        .Select(e => e.GetProperty("choices")[0].GetProperty("text").GetString()));

    [Fact]
    public async Task Five_minutes_of_progress_then_tokens_is_served_on_the_first_worker_with_no_timeout_and_no_retry()
    {
        await using var clock = new VirtualClock(Step);
        await using var a = await ScriptedWorker.StartAsync(ProgressThenTokens(clock, TimeSpan.FromMinutes(5)));
        await using var b = await ScriptedWorker.StartAsync(ProgressThenTokens(clock, TimeSpan.FromMinutes(5)));
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [a.Address, b.Address], clock.Time,
            "--Router:InactivityTimeoutMs", "30000", "--Router:KeepAliveIntervalMs", "10000");
        try
        {
            await router.WaitForWorkers(2);
            var started = clock.Elapsed;
            var lines = await StreamLinesAsync(router, new { model = "tiny", prompt = "a long document", max_tokens = 3, stream = true });
            var took = clock.Elapsed - started;

            Assert.True(took >= TimeSpan.FromMinutes(5), $"the request ended after {took} of virtual time, before the prefill did");
            Assert.Equal("t0 t1 t2 ", Texts(lines));
            Assert.Equal("data: [DONE]", lines[^1]);
            Assert.DoesNotContain(lines, l => l.Contains("\"error\"", StringComparison.Ordinal));
            // One Generate call in all: ten inactivity bounds' worth of prefill, and no retry while progress flowed.
            Assert.Equal(1, a.GenerateCalls + b.GenerateCalls);
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    [Fact]
    public async Task Keep_alive_comments_come_at_their_interval_and_show_the_prefill_progress()
    {
        await using var clock = new VirtualClock(Step);
        await using var worker = await ScriptedWorker.StartAsync(ProgressThenTokens(clock, TimeSpan.FromSeconds(100)));
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], clock.Time, "--Router:KeepAliveIntervalMs", "10000");
        try
        {
            await router.WaitForWorkers(1);
            var lines = await StreamLinesAsync(router, new { model = "tiny", prompt = "a long document", max_tokens = 3, stream = true });
            var comments = lines.TakeWhile(l => l.StartsWith(':')).ToList();
            // 100 s of prefill at one comment per 10 s: nine or ten comments (the last may race the first token), never a burst or a gap.
            Assert.InRange(comments.Count, 9, 11);
            var counts = comments.Select(c => System.Text.RegularExpressions.Regex.Match(c, @"^: prefill (\d+)/(\d+) tokens, (\d+) s$"))
                .Where(m => m.Success).Select(m => (Done: int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
                    Seconds: int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture))).ToList();
            Assert.True(counts.Count >= comments.Count - 1, "comments without prefill progress:\n" + string.Join('\n', comments));
            for (int i = 1; i < counts.Count; i++)
            {
                Assert.True(counts[i].Done >= counts[i - 1].Done, "progress went backwards:\n" + string.Join('\n', comments));
                Assert.InRange(counts[i].Seconds - counts[i - 1].Seconds, 9, 11);
            }
            Assert.Equal("t0 t1 t2 ", Texts(lines));
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    [Fact]
    public async Task Silence_mid_prefill_is_a_timeout_and_the_request_moves_to_the_other_worker()
    {
        await using var clock = new VirtualClock(Step);
        // Whichever worker gets the request first reports progress for 60 s and then falls silent; the other serves.
        int calls = 0;
        GenerateScript script = async (request, stream, _, ct) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                await ProgressThenTokens(clock, TimeSpan.FromHours(1))(request, new SilentAfter(stream, clock, TimeSpan.FromSeconds(60)), 1, ct);
                return;
            }
            await ScriptedWorker.TokensAsync(request, stream, 3);
        };
        await using var a = await ScriptedWorker.StartAsync(script);
        await using var b = await ScriptedWorker.StartAsync(script);
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [a.Address, b.Address], clock.Time, "--Router:InactivityTimeoutMs", "30000");
        try
        {
            await router.WaitForWorkers(2);
            var started = clock.Elapsed;
            var lines = await StreamLinesAsync(router, new { model = "tiny", prompt = "a long document", max_tokens = 3, stream = true });
            var took = clock.Elapsed - started;
            Assert.Equal("t0 t1 t2 ", Texts(lines));
            Assert.Equal(1, a.GenerateCalls);
            Assert.Equal(1, b.GenerateCalls);
            // The last progress report went out at 55 s, then 30 s of silence before the move: not sooner (progress
            // was activity; a bound on total time would have moved it at 30 s), not much later.
            Assert.InRange(took.TotalSeconds, 84, 100);
            await RouterHost.Eventually(() => a.Cancelled + b.Cancelled == 1, "the silent worker's call is cancelled");
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    [Fact]
    public async Task Silence_mid_prefill_with_no_other_worker_is_a_504_that_says_where_the_prefill_stood()
    {
        await using var clock = new VirtualClock(Step);
        await using var worker = await ScriptedWorker.StartAsync((request, stream, _, ct) =>
            ProgressThenTokens(clock, TimeSpan.FromHours(1))(request, new SilentAfter(stream, clock, TimeSpan.FromSeconds(20)), 1, ct));
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], clock.Time,
            "--Router:InactivityTimeoutMs", "30000", "--Router:KeepAliveIntervalMs", "600000");
        try
        {
            await router.WaitForWorkers(1);
            var (status, body, _) = await router.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = "a long document", max_tokens = 3 }));
            Assert.Equal(504, status);
            ErrorShape.Assert(body, code: "timeout");
            var message = body.GetProperty("error").GetProperty("message").GetString()!;
            Assert.Contains("went silent for 30 s after reporting prefill", message, StringComparison.Ordinal);
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_requests_own_deadline_ends_a_long_prefill_with_a_504_event_and_cancels_the_worker_call()
    {
        await using var clock = new VirtualClock(Step);
        await using var worker = await ScriptedWorker.StartAsync(ProgressThenTokens(clock, TimeSpan.FromMinutes(10)));
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [worker.Address], clock.Time, "--Router:KeepAliveIntervalMs", "10000");
        try
        {
            await router.WaitForWorkers(1);
            var lines = await StreamLinesAsync(router, new { model = "tiny", prompt = "a long document", max_tokens = 3, stream = true }, timeout: "60");
            var error = lines.Single(l => l.StartsWith("data: {\"error\"", StringComparison.Ordinal));
            Assert.Contains("deadline_exceeded", error, StringComparison.Ordinal);
            Assert.Contains("deadline of 60 s passed", error, StringComparison.Ordinal);
            Assert.Equal("data: [DONE]", lines[^1]);
            await RouterHost.Eventually(() => worker.Cancelled == 1, "the worker call is cancelled at the deadline");

            var (status, body, _) = await router.PostAsync("/v1/completions", JsonSerializer.Serialize(new { model = "tiny", prompt = "x", max_tokens = 1 }), timeoutHeader: "soon");
            Assert.Equal(400, status);
            ErrorShape.Assert(body, code: "invalid_request_timeout");
        }
        finally
        {
            await router.DisposeAsync();
        }
    }

    /// <summary>Passes writes through until <paramref name="after"/> (virtual) has passed, then swallows them: a frozen worker.</summary>
    private sealed class SilentAfter(IServerStreamWriter<GenerateChunk> inner, VirtualClock clock, TimeSpan after) : IServerStreamWriter<GenerateChunk>
    {
        private readonly DateTimeOffset _until = clock.Time.GetUtcNow() + after;

        public WriteOptions? WriteOptions { get => inner.WriteOptions; set => inner.WriteOptions = value; }

        public Task WriteAsync(GenerateChunk message) => WriteAsync(message, CancellationToken.None);

        public Task WriteAsync(GenerateChunk message, CancellationToken cancellationToken) =>
            clock.Time.GetUtcNow() < _until ? inner.WriteAsync(message, cancellationToken) : Task.CompletedTask;
    }
}
