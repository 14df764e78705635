// The engine's side of a request's stream. The engine thread writes chunks to
// the request's channel (Emit after each sampled token, EmitProgress while the
// prompt is queued or prefilling, FinishWithError when it cannot go on); the
// caller reads them through ReadAsync, whose cancellation or early disposal
// aborts the request on the engine thread (before its next chunk) and frees
// its blocks.
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Platform.Engine.KvCache;
using Platform.Engine.Scheduling;

namespace Platform.Engine;

public sealed partial class LlmEngine
{
    private async IAsyncEnumerable<GenerationChunk> ReadAsync(EngineRequest request, ChannelReader<GenerationChunk> reader,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        bool finished = false;
        using var registration = cancellationToken.Register(() => Enqueue(() => Abort(request)));
        try
        {
            while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var chunk))
                {
                    if (chunk.Finish is not null) finished = true;
                    yield return chunk;
                }
            }
        }
        finally
        {
            // The consumer stopped early (break, dispose, exception): free the request's blocks.
            if (!finished) Enqueue(() => Abort(request));
        }
    }

    /// <summary>Streams one new token, applying stop conditions (EOS, stop ids, stop strings, lengths).</summary>
    private void Emit(EngineRequest r, int token, float[]? logits, Sampling.TokenLogprobs? logprobs)
    {
        var (text, finish) = r.Processor.Process(token, r.OutputLength, r.Tokens.Count, r.MaxTotalTokens);
        FirstTokenTimes? times = null;
        if (r.FirstTokenAt is null)
        {
            var admitted = r.AdmittedAt ?? r.ArrivedAt;
            times = new FirstTokenTimes(admitted - r.ArrivedAt, DateTimeOffset.UtcNow - admitted);
        }
        r.Output.TryWrite(new GenerationChunk([token], text, finish, r.PromptLength, Math.Max(0, r.CachedPromptTokens), r.OutputLength,
            logits is null ? null : [logits], null, Split(r), Times: times, Logprobs: logprobs is null ? null : [logprobs]));
        EngineTelemetry.TokenEmitted(r, finish);
        if (finish is not null)
        {
            try
            {
                _scheduler.Finish(r);
            }
            finally
            {
                r.Output.TryComplete();
            }
        }
    }

    /// <summary>
    /// Writes a progress chunk (no tokens, no text, no finish): how much of the prompt has its KV in place, or that
    /// the request is still queued. It tells a caller waiting minutes for a long prefill that the request lives.
    /// </summary>
    private static void EmitProgress(EngineRequest r, bool queued, DateTimeOffset now)
    {
        r.LastProgressAt = now;
        int cached = Math.Max(0, r.CachedPromptTokens);
        var progress = queued
            ? new PrefillProgress(0, r.PromptLength, true, 0)
            : new PrefillProgress(Math.Min(r.NumComputed, r.PromptLength), r.PromptLength, false, Math.Min(cached, r.NumComputed));
        r.Output.TryWrite(new GenerationChunk([], "", null, r.PromptLength, queued ? 0 : cached, r.OutputLength, CachedByTier: Split(r), Progress: progress));
    }

    /// <summary>A progress chunk for each waiting request that has been silent for QueuedProgressInterval.</summary>
    private void EmitQueuedProgress(DateTimeOffset now)
    {
        foreach (var r in _scheduler.Waiting)
            if (now - (r.LastProgressAt ?? r.ArrivedAt) >= QueuedProgressInterval) EmitProgress(r, queued: true, now);
    }

    private void FinishWithError(EngineRequest r, string message)
    {
        if (r.Status != RequestStatus.Finished) _scheduler.Remove(r);
        r.Output.TryWrite(new GenerationChunk([], "", FinishReason.Error, r.PromptLength, Math.Max(0, r.CachedPromptTokens), r.OutputLength, null, message, Split(r)));
        r.Output.TryComplete();
    }

    private static CachedTokenSplit Split(EngineRequest r)
    {
        int cached = Math.Max(0, r.CachedPromptTokens);
        return new CachedTokenSplit(cached - r.CachedHostTokens - r.CachedRemoteTokens, r.CachedHostTokens, r.CachedRemoteTokens);
    }
}
