// The OpenAI-compatible HTTP surface: POST /v1/completions, POST
// /v1/chat/completions (Server-Sent Events ending in "data: [DONE]" when
// stream is true, one JSON body otherwise) and GET /v1/models.
//
// Order of work for a generation request, each step able to answer alone:
//   concurrency limit (429) → body size (413) → JSON (400) → parameters (400)
//   → a worker identity exists (503) → model name (404) → tokenize and check the
//   context (400) → hash blocks, place, start on a worker with retries
//   (GenerationForwarder: 400/429/502/503/504) → stream or collect.
// With n > 1 the request runs as n child generations (seed + i), each placed and
// started on its own, and merged into indexed choices (OpenAiEndpoints.Choices.cs).
// No worker is called before the request is known to be valid. After the first
// byte went to the client a worker failure becomes an SSE error event followed
// by [DONE]; a client disconnect disposes the stream, which cancels the worker call.
// A worker that fails mid-stream is replaced without the client noticing
// (MigratingStream), up to Router:MigrationLimit times.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Platform.Core.Protos;
using Platform.Core.Tokenization;
using Platform.Router.Api.ToolCalls;
using Platform.Router.Configuration;
using Platform.Router.Forwarding;
using Platform.Router.Model;
using Platform.Router.Policies;
using Platform.Router.Telemetry;
using Platform.Router.Workers;

namespace Platform.Router.Api;

public sealed partial class OpenAiEndpoints
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    private readonly ServedModel _model;
    private readonly WorkerDirectory _workers;
    private readonly GenerationForwarder _forwarder;
    private readonly RouterMetrics _metrics;
    private readonly RouterOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<OpenAiEndpoints> _logger;
    private readonly ToolCallParser? _toolCallParser;
    private readonly TokenPieces _pieces;
    private int _inFlight;

    public OpenAiEndpoints(ServedModel model, WorkerDirectory workers, GenerationForwarder forwarder, RouterMetrics metrics,
        RouterOptions options, TimeProvider time, ILogger<OpenAiEndpoints> logger)
    {
        _model = model;
        _workers = workers;
        _forwarder = forwarder;
        _metrics = metrics;
        _options = options;
        _time = time;
        _logger = logger;
        _toolCallParser = options.ToolCallParser is { Length: > 0 } parser ? ToolCallParser.Create(parser) : null;
        _longestTokenChars = new Lazy<int>(() => LongestTokenChars(model));
        _pieces = new TokenPieces(model.Tokenizer);
    }

    /// <summary>The longest text any single token decodes to (at least 1), read once from the vocabulary.</summary>
    private static int LongestTokenChars(ServedModel model)
    {
        int longest = 1;
        for (int id = 0; id < model.Tokenizer.VocabSize; id++)
            longest = Math.Max(longest, model.Tokenizer.Decode([id]).Length);
        return longest;
    }

    /// <summary>The name clients must send: configured, else the workers' served name, else the model directory's name.</summary>
    public string ModelName =>
        !string.IsNullOrEmpty(_options.ServedModelName) ? _options.ServedModelName
        : _workers.Identity is { ServedModelName.Length: > 0 } id ? id.ServedModelName
        : _model.DefaultName;

    private int MaxContext => _workers.Identity is { MaxContextTokens: > 0 } id ? id.MaxContextTokens : _model.Config.MaxPositionEmbeddings;

    /// <summary>
    /// Prompt characters beyond which no tokenization can fit the context: each token stands for at most the
    /// longest token's text, so text longer than context × that length needs more tokens than the context
    /// has. Doubled (plus a margin) for normalizers that shorten text before it is split.
    /// </summary>
    private long CharsThatCannotFit => 2L * MaxContext * _longestTokenChars.Value + 1024;

    private readonly Lazy<int> _longestTokenChars;

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/completions", (HttpContext c, OpenAiEndpoints e) => e.HandleAsync(c, chat: false));
        app.MapPost("/v1/chat/completions", (HttpContext c, OpenAiEndpoints e) => e.HandleAsync(c, chat: true));
        app.MapGet("/v1/models", (HttpContext c, OpenAiEndpoints e) => e.ModelsAsync(c));
    }

    private async Task ModelsAsync(HttpContext context)
    {
        context.Response.ContentType = "application/json";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        w.WriteStartObject();
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        w.WriteString("id", ModelName);
        w.WriteString("object", "model");
        w.WriteNumber("created", 0);
        w.WriteString("owned_by", "platform");
        w.WriteNumber("max_model_len", MaxContext);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private async Task HandleAsync(HttpContext context, bool chat)
    {
        string route = chat ? "chat" : "completions";
        if (Interlocked.Increment(ref _inFlight) > _options.MaxConcurrentRequests)
        {
            Interlocked.Decrement(ref _inFlight);
            context.Response.Headers.RetryAfter = "1";
            await Fail(context, route, new ApiError(429, $"the router is handling {_options.MaxConcurrentRequests} requests; retry shortly.", ApiError.RateLimit, null, "rate_limit_exceeded")).ConfigureAwait(false);
            return;
        }
        _metrics.InFlight(1);
        try
        {
            await HandleAdmittedAsync(context, chat, route).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            _metrics.InFlight(-1);
        }
    }

    private async Task HandleAdmittedAsync(HttpContext context, bool chat, string route)
    {
        long arrived = _time.GetTimestamp();
        var (document, bodyError) = await ReadJsonAsync(context).ConfigureAwait(false);
        if (bodyError is not null)
        {
            await Fail(context, route, bodyError).ConfigureAwait(false);
            return;
        }
        using var doc = document!;

        SamplingRequest sampling;
        ChatRequest? chatRequest = null;
        CompletionRequest? completionRequest = null;
        ApiError? parseError;
        try
        {
            if (chat)
            {
                (chatRequest, parseError) = OpenAiRequests.ParseChat(doc.RootElement);
                sampling = chatRequest?.Sampling!;
            }
            else
            {
                (completionRequest, parseError) = OpenAiRequests.ParseCompletion(doc.RootElement);
                sampling = completionRequest?.Sampling!;
            }
        }
        catch (InvalidOperationException e)
        {
            // JsonElement.GetString on bytes that are not UTF-8, or on an escaped lone surrogate (\ud800).
            await Fail(context, route, ApiError.BadRequest($"a string in the request is not valid Unicode text ({e.Message}); send UTF-8 JSON.", null, "invalid_text")).ConfigureAwait(false);
            return;
        }
        if (parseError is not null)
        {
            await Fail(context, route, parseError).ConfigureAwait(false);
            return;
        }

        var (deadlineSpan, deadlineError) = RequestDeadline(context);
        if (deadlineError is not null)
        {
            await Fail(context, route, deadlineError).ConfigureAwait(false);
            return;
        }

        // The served name comes from the workers, so "no worker yet" is answered before "unknown model".
        var identity = _workers.Identity;
        if (identity is null)
        {
            await Fail(context, route, new ApiError(503, "no worker has answered yet; retry when /readyz says ready.", ApiError.Server, null, "no_workers")).ConfigureAwait(false);
            return;
        }
        if (ModelError(sampling.Model) is { } modelError)
        {
            await Fail(context, route, modelError).ConfigureAwait(false);
            return;
        }

        if (chatRequest is { ToolChoice: ToolChoice.Auto } && _toolCallParser is null)
        {
            await Fail(context, route, ApiError.BadRequest(
                "tool_choice \"auto\" (the default when tools are sent) needs the router started with --tool-call-parser NAME (" + string.Join(", ", ToolCallParser.Names)
                + "), so the model's calls can be read; send tool_choice \"none\" to show the tools without reading calls.", "tool_choice")).ConfigureAwait(false);
            return;
        }
        if (sampling.LogitBias.Keys.Any(id => id >= _model.Config.VocabSize))
        {
            await Fail(context, route, ApiError.BadRequest($"logit_bias token ids must be below the vocabulary size {_model.Config.VocabSize}.", "logit_bias")).ConfigureAwait(false);
            return;
        }
        if (sampling.StopTokenIds.Any(id => id >= _model.Config.VocabSize))
        {
            await Fail(context, route, ApiError.BadRequest($"stop_token_ids must be below the vocabulary size {_model.Config.VocabSize}.", "stop_token_ids")).ConfigureAwait(false);
            return;
        }

        IReadOnlyList<int> prompt;
        string promptParam = chat ? "messages" : "prompt";
        // Bound the tokenizer's work before it starts: text longer than the context could hold even at the
        // longest token's length cannot fit, and a body of megabytes must not be tokenized whole to learn that.
        long promptChars = chatRequest?.TextLength ?? completionRequest!.PromptText?.Length ?? 0;
        if (promptChars > CharsThatCannotFit)
        {
            await Fail(context, route, ApiError.BadRequest(
                $"this model's maximum context length is {MaxContext} tokens, and the prompt's {promptChars} characters cannot fit in it; shorten it.", promptParam, "context_length_exceeded")).ConfigureAwait(false);
            return;
        }
        if (chatRequest is not null)
        {
            try
            {
                prompt = _model.EncodeChat(chatRequest.Messages, chatRequest.TemplateInputs);
            }
            catch (ChatTemplateRenderException ex)
            {
                // No chat template, or the model's template refused this conversation (e.g. roles must alternate).
                await Fail(context, route, ApiError.BadRequest(ex.Message, "messages")).ConfigureAwait(false);
                return;
            }
        }
        else if (completionRequest!.PromptIds is { } ids)
        {
            int vocab = _model.Config.VocabSize;
            if (ids.Any(id => id >= vocab))
            {
                await Fail(context, route, ApiError.BadRequest($"prompt token ids must be below the vocabulary size {vocab}.", "prompt")).ConfigureAwait(false);
                return;
            }
            prompt = ids;
        }
        else prompt = _model.EncodePrompt(completionRequest.PromptText!);

        int maxContext = MaxContext;
        if (prompt.Count == 0)
        {
            await Fail(context, route, ApiError.BadRequest("the prompt encodes to no tokens.", promptParam)).ConfigureAwait(false);
            return;
        }
        if (prompt.Count >= maxContext)
        {
            await Fail(context, route, ApiError.BadRequest(
                $"this model's maximum context length is {maxContext} tokens, but the prompt has {prompt.Count}; shorten it.", promptParam, "context_length_exceeded")).ConfigureAwait(false);
            return;
        }
        int maxTokens = sampling.MaxTokens ?? (chat ? maxContext - prompt.Count : Math.Min(16, maxContext - prompt.Count));
        if (prompt.Count + maxTokens > maxContext)
        {
            await Fail(context, route, ApiError.BadRequest(
                $"this model's maximum context length is {maxContext} tokens; the prompt has {prompt.Count} and max_tokens asks for {maxTokens}. Lower max_tokens to at most {maxContext - prompt.Count}.",
                "max_tokens", "context_length_exceeded")).ConfigureAwait(false);
            return;
        }

        var resolved = sampling.Resolve(_model.Generation);
        var grpcRequest = new GenerateRequest
        {
            RequestId = context.TraceIdentifier,
            Sampling = new SamplingOptions
            {
                MaxTokens = maxTokens,
                // What the request left out comes from the model's generation_config.json, then the API's defaults.
                Temperature = resolved.Temperature,
                TopK = resolved.TopK,
                TopP = resolved.TopP,
                IgnoreEos = sampling.IgnoreEos,
                MinP = sampling.MinP,
                PresencePenalty = sampling.PresencePenalty,
                FrequencyPenalty = sampling.FrequencyPenalty,
                RepetitionPenalty = sampling.RepetitionPenalty ?? _model.Generation.RepetitionPenalty ?? 1.0,
            },
        };
        // A request without a seed gets one here, once: if its worker dies mid-stream, the next worker continues the
        // same random stream (the draw for output i depends only on the seed and i), so the text stays token-exact.
        grpcRequest.Sampling.Seed = sampling.Seed ?? (ulong)Random.Shared.NextInt64();
        if (sampling.Logprobs is { } alternatives) grpcRequest.Sampling.Logprobs = alternatives;
        grpcRequest.Sampling.Stop.AddRange(sampling.Stop);
        grpcRequest.Sampling.StopTokenIds.AddRange(sampling.StopTokenIds);
        foreach (var (id, bias) in sampling.LogitBias) grpcRequest.Sampling.LogitBias[id] = bias;
        grpcRequest.PromptTokenIds.AddRange(prompt);
        var children = ChildRequests(grpcRequest, sampling.N, sampling.Seed);

        string? session = context.Request.Headers[_options.SessionHeader].FirstOrDefault();
        var hashes = prompt switch
        {
            List<int> list => identity.Hasher.HashPrefix(CollectionsMarshal.AsSpan(list)),
            int[] array => identity.Hasher.HashPrefix(array),
            _ => identity.Hasher.HashPrefix(prompt.ToArray()),
        };
        var placement = new PlacementRequest(hashes, prompt.Count, identity.BlockSize, session);

        // The request's own deadline, if any, ends it like a client disconnect would, but with a 504 the client sees.
        using var deadlineTimer = deadlineSpan is { } span ? new CancellationTokenSource(span, _time) : null;
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, deadlineTimer?.Token ?? CancellationToken.None);
        // n > 1: the failure of one generation cancels the others through this.
        using var siblings = CancellationTokenSource.CreateLinkedTokenSource(ended.Token);
        var deadline = new Deadline(deadlineSpan, deadlineTimer, context.RequestAborted);
        var watch = new PrefillWatch();
        // Each child is placed on its own; the first one's progress feeds the keep-alive comments.
        var starting = StartAllAsync(children, placement, arrived, watch, siblings);
        if (sampling.Stream) await KeepAliveUntilAsync(context, starting, watch).ConfigureAwait(false);
        var (streams, failure) = await starting.ConfigureAwait(false);
        if (failure is { } started)
        {
            if (started.Error == ForwarderError.Canceled && !deadline.Passed)
            {
                _metrics.Request(route, 499);
                return;
            }
            if (started.Error == ForwarderError.Canceled) started = AttemptResult.Final(ForwarderError.DeadlineExceeded, deadline.Message(watch.Current));
            var status = ForwarderErrors.HttpStatus(started.Error);
            if (context.Response.HasStarted)
            {
                // Keep-alive comments already committed a 200 stream: the failure is an error event, as mid-stream.
                _metrics.Request(route, status);
                await WriteSseErrorAsync(context, new ApiError(status, started.Message, ApiError.Server, null, SnakeCase(started.Error))).ConfigureAwait(false);
                return;
            }
            if (started.Error == ForwarderError.Aborted) context.Response.Headers.RetryAfter = "1";
            await Fail(context, route, new ApiError(status, started.Message,
                status < 500 && status != 429 ? ApiError.InvalidRequest : status == 429 ? ApiError.RateLimit : ApiError.Server,
                null, started.Error == ForwarderError.Rejected ? null : SnakeCase(started.Error))).ConfigureAwait(false);
            return;
        }

        var migrating = new List<MigratingStream>(streams.Count);
        try
        {
            for (int i = 0; i < streams.Count; i++)
                migrating.Add(new MigratingStream(streams[i], _forwarder, children[i], placement, _options.MigrationLimit, _metrics, _time, _logger, siblings.Token));
            if (!context.Response.HasStarted) context.Response.Headers["x-platform-worker"] = string.Join(',', migrating.Select(m => m.WorkerId).Distinct());
            var response = new ResponseShape(chat, (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("n"),
                _time.GetUtcNow().ToUnixTimeSeconds(), sampling.Model, prompt.Count, sampling.Logprobs is not null)
            {
                // With tool_choice auto the reply is read for tool calls in the model's format (--tool-call-parser).
                ToolCalls = chatRequest is { ToolChoice: ToolChoice.Auto } ? _toolCallParser : null,
                ParallelToolCalls = chatRequest?.ParallelToolCalls ?? true,
            };
            if (sampling.Stream) await StreamAsync(context, route, migrating, response, sampling.IncludeUsage, deadline, siblings).ConfigureAwait(false);
            else await CollectAsync(context, route, migrating, response, deadline, siblings).ConfigureAwait(false);
        }
        finally
        {
            foreach (var m in migrating) m.Dispose();
            for (int i = migrating.Count; i < streams.Count; i++) streams[i].Dispose();
        }
    }

    /// <summary>
    /// n generations of one request, as vLLM's parallel sampling makes them: child i is the request with seed + i when the
    /// client gave a seed (so the n texts are reproducible), else with a seed of its own drawn here (each child keeps its
    /// seed if it migrates). n = 1 is the request itself.
    /// </summary>
    private static List<GenerateRequest> ChildRequests(GenerateRequest request, int n, ulong? clientSeed)
    {
        if (n == 1) return [request];
        var children = new List<GenerateRequest>(n);
        for (int i = 0; i < n; i++)
        {
            var child = request.Clone();
            child.RequestId = $"{request.RequestId}-{i}";
            child.Sampling.Seed = clientSeed is { } seed ? unchecked(seed + (ulong)i) : (ulong)Random.Shared.NextInt64();
            children.Add(child);
        }
        return children;
    }

    /// <summary>
    /// Starts every child (each with the forwarder's retries). All started: their streams. Otherwise the first real
    /// failure (the others are cancelled, and their streams, if any, disposed): the request fails as one would.
    /// </summary>
    private async Task<(IReadOnlyList<WorkerStream> Streams, AttemptResult? Failure)> StartAllAsync(IReadOnlyList<GenerateRequest> children,
        PlacementRequest placement, long arrived, PrefillWatch watch, CancellationTokenSource siblings)
    {
        var starts = children.Select((child, i) => _forwarder.StartAsync(child, placement, arrived, i == 0 ? watch : null, null, siblings.Token)).ToList();
        AttemptResult? failure = null;
        var remaining = new List<Task<AttemptResult>>(starts);
        while (remaining.Count > 0)
        {
            var done = await Task.WhenAny(remaining).ConfigureAwait(false);
            remaining.Remove(done);
            var result = await done.ConfigureAwait(false);
            if (result.Stream is not null) continue;
            if (failure is null || (failure.Error == ForwarderError.Canceled && result.Error != ForwarderError.Canceled)) failure = result;
            if (!siblings.IsCancellationRequested) await siblings.CancelAsync().ConfigureAwait(false);
        }
        if (failure is null) return (starts.Select(t => t.Result.Stream!).ToList(), null);
        foreach (var t in starts) t.Result.Stream?.Dispose();
        return ([], failure);
    }

    /// <summary>The request's overall deadline: the x-request-timeout header (seconds), else Router:RequestTimeoutMs (0: none).</summary>
    private (TimeSpan? Deadline, ApiError? Error) RequestDeadline(HttpContext context)
    {
        if (context.Request.Headers[RequestTimeoutHeader].FirstOrDefault() is not { Length: > 0 } header)
            return (_options.RequestTimeoutMs > 0 ? TimeSpan.FromMilliseconds(_options.RequestTimeoutMs) : null, null);
        if (!double.TryParse(header, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double seconds)
            || !(seconds > 0) || seconds > TimeSpan.MaxValue.TotalSeconds / 2)
            return (null, ApiError.BadRequest($"the {RequestTimeoutHeader} header is '{header}'; send the request's deadline as a positive number of seconds, e.g. 600.", null, "invalid_request_timeout"));
        return (TimeSpan.FromSeconds(seconds), null);
    }

    public const string RequestTimeoutHeader = "x-request-timeout";

    /// <summary>A request's deadline: whether it (rather than the client) ended the request, and how to say so.</summary>
    private sealed record Deadline(TimeSpan? Span, CancellationTokenSource? Timer, CancellationToken ClientAborted)
    {
        public bool Passed => Timer is { IsCancellationRequested: true } && !ClientAborted.IsCancellationRequested;

        public string Message(PrefillSnapshot? progress) =>
            $"the request's deadline of {Span?.TotalSeconds:0.###} s passed before it finished"
            + (progress is { Reported: true, Queued: false } p ? $" (prefill {p.Computed}/{p.Total} tokens on {p.WorkerId})" : "")
            + $"; send a longer {RequestTimeoutHeader} (seconds) or a shorter prompt.";
    }

    private ApiError? ModelError(string requested) =>
        requested == ModelName ? null
        : new ApiError(404, $"The model '{requested}' does not exist; this router serves '{ModelName}' (see GET /v1/models).", ApiError.InvalidRequest, "model", "model_not_found");

    private async Task<(JsonDocument?, ApiError?)> ReadJsonAsync(HttpContext context)
    {
        if (context.Request.ContentLength > _options.MaxRequestBodyBytes)
            return (null, TooLarge(context));
        // JSON only: application/json or any +json type (a request without a Content-Type is read as JSON).
        if (context.Request.ContentType is { Length: > 0 } type
            && !(System.Net.Http.Headers.MediaTypeHeaderValue.TryParse(type, out var media) && media.MediaType is { } m
                 && (m.Equals("application/json", StringComparison.OrdinalIgnoreCase) || m.EndsWith("+json", StringComparison.OrdinalIgnoreCase))))
            return (null, new ApiError(415, $"the request body must be JSON (Content-Type: application/json), not {type}.", ApiError.InvalidRequest, null, "unsupported_media_type"));
        var sizeFeature = context.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (sizeFeature is { IsReadOnly: false }) sizeFeature.MaxRequestBodySize = _options.MaxRequestBodyBytes;
        try
        {
            var doc = await JsonDocument.ParseAsync(context.Request.Body, new JsonDocumentOptions { MaxDepth = 64 }, context.RequestAborted).ConfigureAwait(false);
            return (doc, null);
        }
        catch (JsonException e)
        {
            return (null, ApiError.BadRequest($"the request body is not valid JSON: {e.Message}", null, "invalid_json"));
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return (null, TooLarge(context));
        }
    }

    // The unread rest of an oversized body makes the connection unusable: tell the
    // client to close it, so its next request does not race Kestrel's close.
    private ApiError TooLarge(HttpContext context)
    {
        context.Response.Headers.Connection = "close";
        return new ApiError(413, $"the request body is larger than {_options.MaxRequestBodyBytes} bytes; send a shorter prompt or raise Router:MaxRequestBodyBytes.", ApiError.InvalidRequest, null, "request_too_large");
    }

    private async Task Fail(HttpContext context, string route, ApiError error)
    {
        _metrics.Request(route, error.Status);
        if (error.Status >= 500) LogServerError(_logger, error.Status, error.Message);
        Activity.Current?.SetStatus(ActivityStatusCode.Error, error.Message);
        await error.WriteAsync(context).ConfigureAwait(false);
    }

    private static string SnakeCase(ForwarderError e)
    {
        var sb = new StringBuilder();
        foreach (char c in e.ToString())
        {
            if (char.IsUpper(c) && sb.Length > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    private static void StartSse(HttpContext context)
    {
        if (context.Response.HasStarted) return;
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
    }

    /// <summary>
    /// While a streamed request waits for its first token, an SSE comment every KeepAliveIntervalMs saying where
    /// it is (": prefill 12288/32512 tokens, 45 s", ": queued on W, 12 s"), so proxies with read timeouts (often
    /// 60 s) keep the connection and a person watching with curl sees progress; OpenAI clients skip comment lines.
    /// The response starts (200) only at the first comment, so a request that fails fast still gets its status
    /// code; after that a failure is an SSE error event.
    /// </summary>
    private async Task KeepAliveUntilAsync(HttpContext context, Task started, PrefillWatch watch)
    {
        var interval = TimeSpan.FromMilliseconds(_options.KeepAliveIntervalMs);
        long since = _time.GetTimestamp();
        while (!started.IsCompleted && !context.RequestAborted.IsCancellationRequested)
        {
            if (await Task.WhenAny(started, Task.Delay(interval, _time)).ConfigureAwait(false) == started) return;
            StartSse(context);
            var waited = _time.GetElapsedTime(since);
            string where = watch.Current is { } progress ? progress.Describe(waited) : $"waiting for a worker, {waited.TotalSeconds:0} s";
            var comment = Encoding.UTF8.GetBytes($": {where}\n\n");
            try
            {
                await context.Response.BodyWriter.WriteAsync(comment, context.RequestAborted).ConfigureAwait(false);
                await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return; // The client left; the forwarder sees the same token and cancels the generation.
            }
        }
    }

    /// <summary>An error event in OpenAI's error shape, then [DONE], on a stream whose 200 is already sent.</summary>
    private static async Task WriteSseErrorAsync(HttpContext context, ApiError error)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer)) error.WriteBody(w);
        var body = context.Response.BodyWriter;
        try
        {
            await body.WriteAsync("data: "u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
            await body.WriteAsync(buffer.WrittenMemory, context.RequestAborted).ConfigureAwait(false);
            await body.WriteAsync("\n\n"u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
            await body.WriteAsync(Done, context.RequestAborted).ConfigureAwait(false);
            await body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The client is gone.
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Answering {Status}: {Message}")]
    private static partial void LogServerError(ILogger logger, int status, string message);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Worker {Worker} failed mid-stream; ending the client's stream with an error event: {Message}")]
    private static partial void LogMidStreamFailure(ILogger logger, string worker, string message);
}
