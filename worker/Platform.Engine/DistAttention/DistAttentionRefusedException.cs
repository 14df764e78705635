namespace Platform.Engine.DistAttention;

/// <summary>Peers cannot hold a sequence's remote share: the engine refuses the request with this message (a 400).</summary>
public sealed class DistAttentionRefusedException(string message) : Exception(message);
