namespace Platform.Engine;

/// <summary>The engine cannot take requests (it failed, or is shutting down): maps to HTTP 503.</summary>
public sealed class EngineUnavailableException(string message) : Exception(message);
