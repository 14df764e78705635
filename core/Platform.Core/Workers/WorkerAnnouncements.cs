// The lines platform-worker prints on stdout (unless --announce false) so a
// launcher learns its addresses and when it can serve: written by the worker,
// read by `platform up`, the bench and the tests' WorkerProcess. Spelled once.
namespace Platform.Core.Workers;

public static class WorkerAnnouncements
{
    /// <summary>"PLATFORM_WORKER_LISTENING http://IP:PORT": the gRPC endpoint is bound (the model may still be loading).</summary>
    public const string Listening = "PLATFORM_WORKER_LISTENING ";

    /// <summary>"PLATFORM_WORKER_HTTP_LISTENING http://IP:PORT": health and metrics.</summary>
    public const string HttpListening = "PLATFORM_WORKER_HTTP_LISTENING ";

    /// <summary>The model is loaded; the worker serves.</summary>
    public const string Ready = "PLATFORM_WORKER_READY";
}
