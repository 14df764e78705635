// Readiness means serving: /readyz answers 503 until a worker is in the pool, and its body
// reports how many of the known workers are, so `platform up` can wait for all of them.
using System.Net;
using System.Text.Json;
using Platform.Core.Networking;

namespace Platform.Router.Tests;

public sealed class ReadinessTests
{
    private static async Task<(HttpStatusCode Status, int InPool, int Known, bool Ready)> ReadyzAsync(RouterHost router)
    {
        using var response = await router.Http.GetAsync("/readyz");
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        return (response.StatusCode, body.GetProperty("workers_in_pool").GetInt32(), body.GetProperty("workers_known").GetInt32(), body.GetProperty("ready").GetBoolean());
    }

    [Fact]
    public async Task Not_ready_until_a_worker_joined_then_the_body_counts_the_pool()
    {
        int port = LoopbackPort.Free();
        int dead = LoopbackPort.Free();
        var router = await RouterHost.StartAsync(TestModels.TinyLlama, [$"http://127.0.0.1:{port}", $"http://127.0.0.1:{dead}"]);
        InProcessWorker? worker = null;
        try
        {
            await Task.Delay(500); // a few health periods with nothing listening
            var before = await ReadyzAsync(router);
            Assert.Equal((HttpStatusCode.ServiceUnavailable, 0, 2, false), before);
            var (none, noneBody, _) = await router.PostAsync("/v1/completions", """{"model":"tiny","prompt":"hi","max_tokens":2}""");
            Assert.Equal(503, none);
            ErrorShape.Assert(noneBody, code: "no_workers");

            worker = await TestWorkers.StartAsync(TestModels.TinyLlama, port);
            await router.WaitForWorkers(1);
            Assert.Equal((HttpStatusCode.OK, 1, 2, true), await ReadyzAsync(router));
            var (ok, body, _) = await router.PostAsync("/v1/completions", """{"model":"tiny","prompt":"hi","max_tokens":2}""");
            Assert.True(ok == 200, body.ToString());
        }
        finally
        {
            await router.DisposeAsync();
            if (worker is not null) await worker.DisposeAsync();
        }
    }
}
