// The worker as a real child process (`dotnet platform-worker.dll --model DIR
// --port 0 --http-port 0`), found through its PLATFORM_WORKER_* lines, as the
// router's end-to-end tests and `platform up` start it.
using System.Net;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Platform.Core.Protos;
using V = Platform.Core.Telemetry.VllmMetricNames;

namespace Platform.Worker.Tests;

public sealed class ProcessTests
{
    [Fact]
    public async Task Worker_runs_as_a_process_serves_requests_drains_on_SIGTERM_and_can_be_killed()
    {
        string[] args = ["--model", TestModel.Dir, "--port", "0", "--http-port", "0", "--kv-blocks", "64", "--threads", "1", "--worker-id", "proc-1",
            "--drain-grace-seconds", "5"];
        await using (var worker = await WorkerProcess.StartAsync(args))
        {
            Assert.Equal("127.0.0.1", worker.GrpcAddress.Host);
            Assert.NotEqual(0, worker.GrpcAddress.Port);
            using var channel = GrpcChannel.ForAddress(worker.GrpcAddress);
            var client = new Inference.InferenceClient(channel);
            Assert.Equal("proc-1", (await client.GetInfoAsync(new InfoRequest())).WorkerId);
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest())).Status);

            using var call = client.Generate(WorkerUnderTest.Request(TestModel.Prompt(20, 1), 5));
            int tokens = 0;
            GenerateChunk? last = null;
            while (await call.ResponseStream.MoveNext(CancellationToken.None))
            {
                last = call.ResponseStream.Current;
                tokens += last.TokenIds.Count;
            }
            Assert.Equal(5, tokens);
            Assert.Equal(FinishReason.Length, last!.FinishReason);

            using var http = new HttpClient { BaseAddress = worker.HttpAddress };
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/readyz")).StatusCode);
            // The process serves vLLM's exact names (colons included), each with a count after this request.
            string metrics = await http.GetStringAsync("/metrics");
            foreach (var name in V.All)
                Assert.Contains("# TYPE " + name + " ", metrics, StringComparison.Ordinal);
            foreach (var (name, value) in new[] { (V.GenerationTokensTotal, 5), (V.PromptTokensTotal, 20), (V.TimeToFirstTokenSeconds + "_count", 1), (V.E2eRequestLatencySeconds + "_count", 1) })
                Assert.Matches(new System.Text.RegularExpressions.Regex("^" + System.Text.RegularExpressions.Regex.Escape(name) + "\\{model_name=\"[^\"]+\"\\} " + value + "$", System.Text.RegularExpressions.RegexOptions.Multiline), metrics);

            worker.Terminate();
            Assert.Equal(0, await worker.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains("Drain complete", worker.OutputTail);
        }

        await using var second = await WorkerProcess.StartAsync(args);
        second.Kill();
        Assert.NotEqual(0, await second.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Invalid_options_exit_with_code_2_and_say_what_to_fix()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            WorkerProcess.StartAsync(["--model", "/nonexistent/model", "--port", "70000", "--block-size", "3"], readyTimeout: TimeSpan.FromSeconds(60)));
        Assert.Contains("exited (code 2)", error.Message);
        Assert.Contains("'/nonexistent/model' does not exist", error.Message);
        Assert.Contains("--port must be in 0..65535", error.Message);
        Assert.Contains("BlockSize must be a power of two", error.Message);
    }

    [Fact]
    public async Task A_cuda_device_this_machine_lacks_stops_the_worker_at_start_naming_it_without_a_stack_trace()
    {
        // This build machine has no GPU and a CPU-only libtorch; on a GPU machine an ordinal past the last GPU is missing.
        string missing = TorchSharp.torch.cuda.is_available() ? $"cuda:{TorchSharp.torch.cuda.device_count()}" : "cuda";
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            WorkerProcess.StartAsync(["--model", TestModel.Dir, "--port", "0", "--http-port", "0", "--device", missing], readyTimeout: TimeSpan.FromSeconds(60)));
        Assert.Contains("exited (code 2)", error.Message);
        Assert.Contains($"--device {missing}:", error.Message);
        Assert.DoesNotContain("   at ", error.Message);
    }

    [Fact]
    public async Task A_model_that_fails_to_load_exits_with_code_3_and_the_reason()
    {
        string dir = Path.Combine(TestModel.Root, "broken-model");
        Directory.CreateDirectory(dir);
        await File.WriteAllTextAsync(Path.Combine(dir, "config.json"), "{\"hidden_size\": 64}");
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            WorkerProcess.StartAsync(["--model", dir, "--port", "0", "--http-port", "0"], readyTimeout: TimeSpan.FromSeconds(60)));
        Assert.Contains("exited (code 3)", error.Message);
        Assert.Contains("model_type", error.Message);
    }
}
