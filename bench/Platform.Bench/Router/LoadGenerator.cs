// Open-loop replay of a workload trace against an OpenAI-compatible router over
// real HTTP: each request is sent at its scheduled arrival time whether or not
// earlier ones finished (a follow-up turn also waits for its previous turn, see
// SharedPrefixWorkload), as a streaming /v1/completions call with the prompt as
// token ids, ignore_eos (so every answer has exactly max_tokens tokens) and
// stream_options.include_usage (for prompt_tokens_details.cached_tokens).
//
// Per request it records: TTFT (send → first SSE event with a choice), the gaps
// between consecutive content events (inter-token latency; the router sends one
// event per token except where text is held back at a UTF-8 boundary, which
// then shows up as one longer gap), end time, usage and the worker that served it
// (x-platform-worker header).
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Platform.Bench.Router;

public sealed record RequestOutcome(int Index, string? Worker, bool Ok, string? Error, double SentSeconds, double TtftSeconds, double EndSeconds,
    int PromptTokens, int CachedTokens, int CompletionTokens, double[] InterTokenSeconds, bool WaitedForPreviousTurn);

public sealed class LoadGenerator(HttpClient http, Uri router, string model)
{
    /// <summary>Replays <paramref name="trace"/>; <paramref name="progress"/> is called about every <paramref name="progressPeriod"/>.</summary>
    public async Task<IReadOnlyList<RequestOutcome>> RunAsync(IReadOnlyList<WorkloadRequest> trace, TimeSpan progressPeriod,
        Action<LiveCounts> progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(trace);
        ArgumentNullException.ThrowIfNull(progress);
        var outcomes = new RequestOutcome?[trace.Count];
        var finished = trace.Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var byIndex = trace.Select((r, i) => (r.Index, i)).ToDictionary(x => x.Index, x => x.i);
        var live = new LiveCounts(trace.Count);
        var clock = Stopwatch.StartNew();

        using var stopProgress = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var reporter = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(progressPeriod);
            try
            {
                while (await timer.WaitForNextTickAsync(stopProgress.Token)) progress(live);
            }
            catch (OperationCanceledException)
            {
                // The run ended.
            }
        }, CancellationToken.None);

        var tasks = new List<Task>(trace.Count);
        for (int i = 0; i < trace.Count; i++)
        {
            var request = trace[i];
            var delay = TimeSpan.FromSeconds(request.ArrivalSeconds) - clock.Elapsed;
            if (delay > TimeSpan.Zero) await Task.Delay(delay, cancellationToken);
            int slot = i;
            tasks.Add(Task.Run(async () =>
            {
                bool waited = false;
                if (request.PreviousTurn >= 0 && byIndex.TryGetValue(request.PreviousTurn, out int prev) && !finished[prev].Task.IsCompleted)
                {
                    waited = true;
                    Interlocked.Increment(ref live.Held);
                    await finished[prev].Task;
                    Interlocked.Decrement(ref live.Held);
                }
                Interlocked.Increment(ref live.Sent);
                var outcome = await SendAsync(request, clock, waited, cancellationToken);
                outcomes[slot] = outcome;
                live.Record(outcome);
                finished[slot].TrySetResult();
            }, CancellationToken.None));
        }
        await Task.WhenAll(tasks);
        await stopProgress.CancelAsync();
        await reporter;
        progress(live);
        return outcomes.Select(o => o!).ToList();
    }

    /// <summary>One request outside a run (warm-up); times are relative to the call.</summary>
    public Task<RequestOutcome> SendOneAsync(WorkloadRequest request, CancellationToken cancellationToken) =>
        SendAsync(request, Stopwatch.StartNew(), waited: false, cancellationToken);

    private async Task<RequestOutcome> SendAsync(WorkloadRequest request, Stopwatch clock, bool waited, CancellationToken cancellationToken)
    {
        double sent = clock.Elapsed.TotalSeconds;
        double ttft = double.NaN;
        string? worker = null;
        var gaps = new List<double>(request.MaxTokens);
        int prompt = 0, cachedTokens = 0, completion = 0;
        try
        {
            using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(router, "/v1/completions"))
            {
                Content = new ByteArrayContent(Body(request)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } },
            };
            using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            if (response.Headers.TryGetValues("x-platform-worker", out var names)) worker = names.FirstOrDefault();
            if (!response.IsSuccessStatusCode)
            {
                string text = await response.Content.ReadAsStringAsync(cancellationToken);
                return Failed($"HTTP {(int)response.StatusCode}: {text}");
            }
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
            double last = double.NaN;
            while (await reader.ReadLineAsync(cancellationToken) is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                var data = line.AsMemory(6);
                if (data.Span.SequenceEqual("[DONE]")) break;
                double now = clock.Elapsed.TotalSeconds;
                using var doc = JsonDocument.Parse(data);
                var root = doc.RootElement;
                if (root.TryGetProperty("error", out var error)) return Failed($"stream error: {error}");
                if (root.TryGetProperty("choices", out var choices) && choices.GetArrayLength() > 0)
                {
                    if (double.IsNaN(ttft)) ttft = now - sent;
                    else gaps.Add(now - last);
                    last = now;
                }
                if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                {
                    prompt = usage.GetProperty("prompt_tokens").GetInt32();
                    completion = usage.GetProperty("completion_tokens").GetInt32();
                    if (usage.TryGetProperty("prompt_tokens_details", out var details) && details.ValueKind == JsonValueKind.Object)
                        cachedTokens = details.GetProperty("cached_tokens").GetInt32();
                }
            }
            if (double.IsNaN(ttft)) return Failed("the stream ended without a token");
            return new RequestOutcome(request.Index, worker, true, null, sent, ttft, clock.Elapsed.TotalSeconds, prompt, cachedTokens, completion, [.. gaps], waited);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or JsonException or KeyNotFoundException or InvalidOperationException
                                       || (e is TaskCanceledException && !cancellationToken.IsCancellationRequested))
        {
            return Failed($"{e.GetType().Name}: {e.Message}");
        }

        RequestOutcome Failed(string why) =>
            new(request.Index, worker, false, why, sent, ttft, clock.Elapsed.TotalSeconds, prompt, cachedTokens, completion, [.. gaps], waited);
    }

    private byte[] Body(WorkloadRequest request)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(request.Prompt.Length * 6 + 256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("model", model);
            w.WriteStartArray("prompt");
            foreach (int t in request.Prompt) w.WriteNumberValue(t);
            w.WriteEndArray();
            w.WriteNumber("max_tokens", request.MaxTokens);
            w.WriteNumber("temperature", 0);
            w.WriteBoolean("ignore_eos", true);
            w.WriteBoolean("stream", true);
            w.WriteStartObject("stream_options");
            w.WriteBoolean("include_usage", true);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>Counters the progress line shows while a policy runs.</summary>
public sealed class LiveCounts(int total)
{
    public int Total { get; } = total;
    public int Sent;
    public int Done;
    public int Failed;
    public int Held;
    private long _prompt, _cached;
    private readonly Lock _lock = new();
    private readonly List<double> _ttft = [];

    public void Record(RequestOutcome outcome)
    {
        Interlocked.Increment(ref Done);
        if (!outcome.Ok) Interlocked.Increment(ref Failed);
        Interlocked.Add(ref _prompt, outcome.PromptTokens);
        Interlocked.Add(ref _cached, outcome.CachedTokens);
        if (outcome.Ok) lock (_lock) _ttft.Add(outcome.TtftSeconds);
    }

    public double HitRate => Interlocked.Read(ref _prompt) is var p and > 0 ? (double)Interlocked.Read(ref _cached) / p : 0;

    public double TtftP50
    {
        get { lock (_lock) return Percentiles.Of(_ttft, 0.5); }
    }
}

public static class Percentiles
{
    /// <summary>Linear-interpolated percentile (q in [0, 1]); NaN for no values.</summary>
    public static double Of(IReadOnlyCollection<double> values, double q)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}
