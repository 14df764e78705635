// Conversions between the gRPC contract (Platform.Core.Protos) and the engine's types.
using Platform.Engine;
using Platform.Engine.Scheduling;
using Proto = Platform.Core.Protos;
using CoreKv = Platform.Core.KvEvents;

namespace Platform.Worker;

internal static class ProtoMapping
{
    /// <summary>
    /// Sampling from the wire. proto3 cannot tell 0 from "unset", so: max_tokens 0 = up to the end of the
    /// context (OpenAI's meaning of an absent max_tokens); top_p 0 = no nucleus cut; temperature 0 = greedy
    /// (the router sends OpenAI's default 1.0 explicitly). No sampling message at all = engine defaults.
    /// </summary>
    public static SamplingParams ToSampling(Proto.SamplingOptions? s, int promptTokens, int maxContextTokens)
    {
        if (s is null) return new SamplingParams();
        return new SamplingParams
        {
            MaxTokens = s.MaxTokens != 0 ? s.MaxTokens : Math.Max(1, maxContextTokens - promptTokens),
            Temperature = s.Temperature,
            TopK = s.TopK,
            // proto3 cannot tell 0 from "unset"; top_p 0 would be invalid, so it means "no nucleus cut".
            TopP = s.TopP == 0 ? 1.0 : s.TopP,
            Seed = s.HasSeed ? s.Seed : null,
            StopTokenIds = [.. s.StopTokenIds],
            StopStrings = [.. s.Stop],
            IgnoreEos = s.IgnoreEos,
            MinP = s.MinP,
            PresencePenalty = s.PresencePenalty,
            FrequencyPenalty = s.FrequencyPenalty,
            RepetitionPenalty = s.RepetitionPenalty == 0 ? 1.0 : s.RepetitionPenalty,
            LogitBias = new Dictionary<int, float>(s.LogitBias),
            Logprobs = s.HasLogprobs ? s.Logprobs : null,
        };
    }

    public static Proto.FinishReason ToProto(FinishReason? reason) => reason switch
    {
        null => Proto.FinishReason.Unspecified,
        FinishReason.Stop => Proto.FinishReason.Stop,
        FinishReason.Length => Proto.FinishReason.Length,
        FinishReason.Abort => Proto.FinishReason.Abort,
        _ => Proto.FinishReason.Error,
    };

    public static Proto.GenerateChunk ToProto(GenerationChunk chunk)
    {
        var message = new Proto.GenerateChunk
        {
            Text = chunk.Text,
            FinishReason = ToProto(chunk.Finish),
            PromptTokens = chunk.PromptTokens,
            CompletionTokens = chunk.CompletionTokens,
            Cached = ToProto(chunk.CachedByTier),
        };
        message.TokenIds.AddRange(chunk.TokenIds);
        if (chunk.Logprobs is { } logprobs)
        {
            foreach (var lp in logprobs)
            {
                var entry = new Proto.TokenLogprob { Logprob = lp.Logprob };
                entry.TopTokenIds.AddRange(lp.TopTokenIds);
                entry.TopLogprobs.AddRange(lp.TopLogprobs);
                message.Logprobs.Add(entry);
            }
        }
        if (chunk.Error is not null) message.Error = chunk.Error;
        if (chunk.Progress is { } p)
        {
            message.Progress = new Proto.PrefillProgress
            {
                ComputedTokens = p.Computed,
                PromptTokens = p.Total,
                Queued = p.Queued,
                CachedTokens = p.Cached,
            };
        }
        return message;
    }

    public static Proto.LoadReport ToLoadReport(EngineStats? stats, bool healthy, bool draining, Platform.Engine.KvCache.KvTierService? tiers = null) => stats is null
        ? new Proto.LoadReport { Healthy = false, Draining = draining }
        : new Proto.LoadReport
        {
            KvHostBlocks = tiers?.Host.Count ?? 0,
            KvHostCapacityBlocks = tiers?.Host.Capacity ?? 0,
            KvRemoteAvailable = tiers?.Remote is { IsConnected: true, BreakerOpen: false },
            Running = stats.Running,
            Waiting = stats.Waiting,
            QueuedPrefillTokens = stats.QueuedPrefillTokens,
            KvBlocksUsed = stats.KvBlocksUsed,
            KvBlocksFree = stats.KvBlocksFree,
            KvBlocksTotal = stats.KvBlocksTotal,
            Healthy = healthy,
            Draining = draining,
        };

    public static Proto.CachedTokens ToProto(CachedTokenSplit split) =>
        new() { Device = split.Device, Host = split.Host, Remote = split.Remote };

    public static Proto.KvTier ToProto(CoreKv.KvTier tier) => tier switch
    {
        CoreKv.KvTier.Host => Proto.KvTier.Host,
        CoreKv.KvTier.Remote => Proto.KvTier.Remote,
        _ => Proto.KvTier.Device,
    };

    public static Proto.KvEvent ToProto(CoreKv.KvEvent e) => new()
    {
        Sequence = e.Sequence,
        Kind = e.Kind switch
        {
            CoreKv.KvEventKind.BlockStored => Proto.KvEventKind.Stored,
            CoreKv.KvEventKind.BlockRemoved => Proto.KvEventKind.Removed,
            _ => Proto.KvEventKind.Cleared,
        },
        BlockHash = e.BlockHash,
        ParentHash = e.ParentHash,
        Tier = ToProto(e.Tier),
    };
}
