// The engine's side of a request's stream. The engine thread writes chunks to
// the request's channel (Emit after each sampled token, FinishWithError when it
// cannot go on); the caller reads them through ReadAsync, whose cancellation or
// early disposal aborts the request on the engine thread and frees its blocks.
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
    private void Emit(EngineRequest r, int token, float[]? logits)
    {
        var (text, finish) = r.Processor.Process(token, r.OutputLength, r.Tokens.Count, r.MaxTotalTokens);
        r.Output.TryWrite(new GenerationChunk([token], text, finish, r.PromptLength, Math.Max(0, r.CachedPromptTokens), r.OutputLength,
            logits is null ? null : [logits], null, Split(r)));
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
