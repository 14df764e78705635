// The router tests' workers: the real worker host (InProcessWorker from
// tests/Platform.Testing: the real Inference service over the real engine, a
// tiny random model) with faults injected in front of the service. The engine
// runs on one thread with a fixed seed; a stopped worker drains for at most
// two seconds.
using Platform.Core.Workers;
using Platform.Testing;

namespace Platform.Router.Tests;

internal static class TestWorkers
{
    public static Task<InProcessWorker> StartAsync(string modelDir, int port = 0, int kvBlocks = 256, string servedName = "tiny") =>
        InProcessWorker.StartAsync(modelDir, new WorkerArguments
        {
            Port = port,
            KvBlocks = kvBlocks,
            Threads = 1,
            Seed = 1,
            MaxContext = 1024,
            ServedModelName = servedName,
            DrainGraceSeconds = 2,
        }.ToArgs());
}
