// `platform up`: the whole platform on one machine. Starts N worker processes
// on loopback (each announces its gRPC address), then the router pointed at
// them, waits until the router is ready, prints the URL and a curl example,
// and on Ctrl-C (or SIGTERM) stops the router and then the workers, each
// draining first. A worker that dies is restarted on its own port and rejoins
// the router's pool (SupervisedWorker), as a kubelet restarts a pod; nothing else
// is touched. If the router dies, everything is stopped and the exit code says so.
// KV tier (docs/kvcache.md): by default (--kv-tier remote) the workers share a
// Redis-compatible store; without --redis this process runs an embedded Garnet
// server on loopback for them, stopped last.
// Memory (WorkerMemory): each worker gets --memory-budget, an equal share of what the machine has
// left after the router and the store, and sizes its KV pool inside it.
using System.CommandLine;
using System.Net;
using System.Text.Json;
using Platform.Core.Networking;
using Platform.Core.Processes;
using Platform.Core.Workers;
using Platform.KvCache;
using Platform.KvCache.Garnet;
using Spectre.Console;

namespace Platform.Cli;

internal static class UpCommand
{
    public const string UrlMarker = "PLATFORM_UP_URL";

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "HuggingFace model directory, or hf://ORG/NAME[@REVISION] (downloaded into the hub cache first)" };
        var demo = new Option<bool>("--demo") { Description = "Use the demo model (created on first run); the default without --model" };
        var workers = new Option<int>("--workers") { Description = "Worker processes", DefaultValueFactory = _ => 2 };
        var port = new Option<int>("--port") { Description = "Router HTTP port (0 picks a free one)", DefaultValueFactory = _ => 8000 };
        var policy = new Option<string>("--policy") { Description = "kv-aware | round-robin | least-loaded | random", DefaultValueFactory = _ => "kv-aware" };
        var kvBlocks = new Option<int?>("--worker-kv-blocks") { Description = "KV blocks per worker (default: a share of memory)" };
        var maxContext = new Option<int?>("--max-context") { Description = "Context limit per request" };
        var apiKey = new Option<string?>("--api-key") { Description = "Require this bearer key on the OpenAI API" };
        var servedName = new Option<string?>("--served-model-name") { Description = "The model name clients send (default: the model directory's name), as on the worker and vLLM" };
        var chatTemplate = new Option<string?>("--chat-template") { Description = "Jinja chat template file that overrides the model's own (as vLLM's flag)" };
        var toolCallParser = new Option<string?>("--tool-call-parser")
        {
            Description = "The format the model writes tool calls in, as vLLM's flag: hermes (Qwen2.5/Qwen3/Hermes) or llama3_json (Llama-3.1/3.2); requests with tools then get tool_calls back",
        };
        var kvTokens = new Option<int?>("--worker-kv-tokens") { Description = "Cap each worker's KV cache at N tokens (wins over --worker-kv-blocks)" };
        var distAttention = new Option<string?>("--dist-attention")
        {
            Description = "on | off: sequences too long for one worker keep KV on the others (default: on with 2+ workers)",
        };
        var kvTier = new Option<string>("--kv-tier") { Description = "off | host | remote (host memory + shared store)", DefaultValueFactory = _ => "remote" };
        var redis = new Option<string?>("--redis") { Description = "HOST:PORT of an external Redis for the shared KV tier (default: an embedded Garnet server)" };
        var hostMemory = new Option<string>("--kv-host-memory") { Description = "Host-memory KV budget per worker, e.g. 2GiB", DefaultValueFactory = _ => "1GiB" };
        var garnetMemory = new Option<string>("--garnet-memory") { Description = "Memory of the embedded Garnet store, e.g. 2g", DefaultValueFactory = _ => "1g" };
        var workerMemory = new Option<string?>("--worker-memory")
        {
            Description = "Memory budget per worker, e.g. 6GiB (default: the available memory less the router's and the store's, divided among the workers)",
        };
        var weightDtype = new Option<string?>("--weight-dtype") { Description = "Width the weight matrices are held in: auto (the checkpoint's bfloat16/float16, widened in registers), float32, bfloat16, float16" };
        var device = new Option<string>(WorkerSwitches.Device) { Description = ComputeDevice.HelpText + "; every worker gets it", DefaultValueFactory = _ => ComputeDevice.CpuName };
        var quantization = new Option<string?>("--quantization") { Description = "none, or int8: decoder-layer weights quantized at load (one fp16 scale per 32 inputs, ~1.06 bytes per weight; float32 compute only)" };
        var command = new Command("up", "Run router and workers on this machine") { weightDtype, quantization, device, model, demo, workers, port, policy, kvBlocks, kvTokens, maxContext, apiKey, servedName, chatTemplate, toolCallParser, distAttention, kvTier, redis, hostMemory, garnetMemory, workerMemory };
        command.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(workers);
            if (n < 1) { await Console.Error.WriteLineAsync("error: --workers must be at least 1."); return 2; }
            if (!ComputeDevice.TryParse(parse.GetValue(device), out var computeDevice, out string? deviceError)
                || Platform.Engine.Torch.TorchDevices.Unavailable(computeDevice) is { } unavailable && (deviceError = unavailable) is not null)
            {
                await Console.Error.WriteLineAsync($"error: {deviceError}");
                return 2;
            }
            string tier = parse.GetValue(kvTier)!.ToLowerInvariant();
            if (tier is not ("off" or "host" or "remote"))
            {
                await Console.Error.WriteLineAsync($"error: --kv-tier must be off, host or remote, got '{tier}'.");
                return 2;
            }
            if (!ByteSize.TryParse(parse.GetValue(hostMemory), out long hostBytes) || hostBytes < 1)
            {
                await Console.Error.WriteLineAsync($"error: --kv-host-memory '{parse.GetValue(hostMemory)}' is not a size; write e.g. 512MB or 4GiB.");
                return 2;
            }
            long tierBytes = tier == "off" ? 0 : hostBytes;
            long storeBytes = 0;
            if (tier == "remote" && parse.GetValue(redis) is null && !ByteSize.TryParse(parse.GetValue(garnetMemory), out storeBytes))
            {
                await Console.Error.WriteLineAsync($"error: --garnet-memory '{parse.GetValue(garnetMemory)}' is not a size; write e.g. 1g or 2GiB.");
                return 2;
            }
            long memoryBudget;
            if (parse.GetValue(workerMemory) is { } explicitBudget)
            {
                if (!ByteSize.TryParse(explicitBudget, out memoryBudget) || memoryBudget <= tierBytes)
                {
                    await Console.Error.WriteLineAsync($"error: --worker-memory '{explicitBudget}' must be a size larger than --kv-host-memory (each worker's host KV tier lives in its budget); write e.g. 6GiB.");
                    return 2;
                }
            }
            else if (WorkerMemory.PerWorkerBudget(n, storeBytes, tierBytes) is { } share)
            {
                memoryBudget = share;
            }
            else
            {
                await Console.Error.WriteLineAsync($"error: not enough free memory for {n} worker(s) besides the router and the store ({Platform.Engine.KvMemoryBudget.Host.AvailableBytes() >> 20} MiB available); run fewer --workers, lower --kv-host-memory / --garnet-memory, or set --worker-memory.");
                return 2;
            }
            string? redisAddress = parse.GetValue(redis);
            if (redisAddress is not null && (tier != "remote" || !IsHostPort(redisAddress)))
            {
                await Console.Error.WriteLineAsync(tier != "remote"
                    ? $"error: --redis is only used with --kv-tier remote (got --kv-tier {tier})."
                    : $"error: --redis '{redisAddress}' is not HOST:PORT (e.g. 127.0.0.1:6379).");
                return 2;
            }
            string? source = parse.GetValue(model);
            string? resolved = source is null ? DemoModel.Ensure() : await HubModels.ResolveAsync(source, ct);
            if (resolved is null) return 1;
            // A hub model is served under its id (ORG/NAME), as vLLM does, not under its snapshot folder's commit hash.
            string? served = parse.GetValue(servedName)
                ?? (Platform.Core.Models.Hub.HubModelReference.IsHubSource(source) ? Platform.Core.Models.Hub.HubModelReference.Parse(source!).RepoId : null);
            string dir = resolved;
            if (source is not null && !File.Exists(Path.Combine(dir, "config.json")))
            {
                await Console.Error.WriteLineAsync($"error: {dir} has no config.json; --model must be a HuggingFace model directory or hf://ORG/NAME.");
                return 2;
            }
            // DistAttention needs peers: on by default for several workers, on any device (PagedKvStore has a tensor path
            // for pools off the CPU).
            string dist = parse.GetValue(distAttention) ?? (n >= 2 ? "on" : "off");
            if (dist is not ("on" or "off")) { await Console.Error.WriteLineAsync($"error: --dist-attention must be on or off, got '{dist}'."); return 2; }
            EmbeddedGarnet? garnet = null;
            if (tier == "remote" && redisAddress is null)
            {
                try
                {
                    garnet = EmbeddedGarnet.Start(memory: parse.GetValue(garnetMemory)!);
                }
                catch (InvalidOperationException e)
                {
                    await Console.Error.WriteLineAsync($"error: {e.Message} Pass --redis HOST:PORT to use an external Redis, or --kv-tier host.");
                    return 1;
                }
                redisAddress = garnet.Address;
            }
            using var garnetLifetime = garnet;
            int routerPort = parse.GetValue(port) is 0 ? LoopbackPort.Free() : parse.GetValue(port);
            // Fixed gRPC ports: DistAttention peers must know each other's addresses before they start, and a
            // restarted worker comes back where the router already looks for it.
            var grpcPorts = Enumerable.Range(0, n).Select(_ => LoopbackPort.Free()).ToArray();
            int threads = Math.Max(1, Environment.ProcessorCount / n);
            string baseDir = AppContext.BaseDirectory;
            var children = new List<ChildProcess>();
            var supervised = new List<SupervisedWorker>();
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            try
            {
                var workerUrls = new List<string>();
                for (int i = 0; i < n; i++)
                {
                    var args = new WorkerArguments
                    {
                        Model = dir,
                        Port = grpcPorts[i],
                        HttpPort = 0,
                        WorkerId = $"worker-{i}",
                        Threads = threads,
                        MemoryBudget = memoryBudget.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        KvBlocks = parse.GetValue(kvBlocks),
                        KvTokens = parse.GetValue(kvTokens),
                        DistAttention = dist == "on",
                        Peers = dist == "on" && n > 1 ? [.. grpcPorts.Where((_, j) => j != i).Select(p => $"http://127.0.0.1:{p}")] : null,
                        MaxContext = parse.GetValue(maxContext),
                        WeightDtype = parse.GetValue(weightDtype),
                        Device = computeDevice.IsCpu ? null : computeDevice.ToString(),
                        Quantization = parse.GetValue(quantization),
                        ServedModelName = served,
                        KvTier = tier,
                        KvHostMemory = tier != "off" ? parse.GetValue(hostMemory)! : null,
                        Redis = tier == "remote" ? redisAddress! : null,
                    };
                    supervised.Add(new SupervisedWorker($"worker-{i}", Path.Combine(baseDir, "platform-worker.dll"), args.ToArgs(),
                        message => Console.Error.WriteLine("warning: " + message)));
                }
                await AnsiConsole.Status().StartAsync($"starting {n} worker(s)…", async _ =>
                {
                    foreach (var w in supervised)
                    {
                        workerUrls.Add(await w.Current.WaitForLineAsync(WorkerAnnouncements.Listening, TimeSpan.FromSeconds(60), stop.Token));
                        await w.Current.WaitForLineAsync(WorkerAnnouncements.Ready, TimeSpan.FromMinutes(10), stop.Token);
                    }
                });
                var routerArgs = new List<string> { "--model", dir, "--workers", string.Join(',', workerUrls), "--port", routerPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--policy", parse.GetValue(policy)! };
                if (parse.GetValue(apiKey) is { } key) routerArgs.AddRange(["--api-key", key]);
                if (served is { } name) routerArgs.AddRange(["--served-model-name", name]);
                if (parse.GetValue(chatTemplate) is { } templateFile) routerArgs.AddRange(["--chat-template", Path.GetFullPath(templateFile)]);
                if (parse.GetValue(toolCallParser) is { } parser) routerArgs.AddRange(["--tool-call-parser", parser]);
                var router = ChildProcess.StartDotnet("router", Path.Combine(baseDir, "platform-router.dll"), routerArgs);
                children.Add(router);
                string url = $"http://127.0.0.1:{routerPort}";
                await WaitReadyAsync(router, url, n, stop.Token);

                Console.WriteLine($"{UrlMarker} {url}");
                AnsiConsole.MarkupLine($"[green]ready[/]: router {url} ({parse.GetValue(policy)}), {n} of {n} workers in its pool: {string.Join(", ", workerUrls)}");
                AnsiConsole.MarkupLine(Markup.Escape($"KV tier: {tier}" + (tier == "remote" ? $", shared store {redisAddress}{(garnet is null ? "" : " (embedded Garnet)")}" : "")));
                AnsiConsole.MarkupLine("try:");
                Console.WriteLine($"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\");
                Console.WriteLine($"    -d '{{\"model\":\"{served ?? Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}],\"max_tokens\":32}}'");
                AnsiConsole.MarkupLine("[grey]Ctrl-C stops everything.[/]");

                foreach (var w in supervised) w.Supervise();
                await Task.WhenAny(router.Exited, Task.Delay(Timeout.Infinite, stop.Token));
                if (!stop.IsCancellationRequested)
                {
                    await Console.Error.WriteLineAsync($"error: the router exited unexpectedly; stopping. Its last output:{Environment.NewLine}{router.Tail}");
                    return 1;
                }
                return 0;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return 0;
            }
            catch (Exception e) when (e is InvalidOperationException or FileNotFoundException)
            {
                await Console.Error.WriteLineAsync($"error: {e.Message}");
                return 1;
            }
            finally
            {
                // Router first, so no new request reaches a draining worker.
                for (int i = children.Count - 1; i >= 0; i--) await children[i].StopAsync(TimeSpan.FromSeconds(15));
                foreach (var c in children) await c.DisposeAsync();
                await Task.WhenAll(supervised.Select(w => w.StopAsync(TimeSpan.FromSeconds(15))));
                foreach (var w in supervised) await w.DisposeAsync();
            }
        });
        return command;
    }

    /// <summary>Waits until the router's /readyz reports all <paramref name="workers"/> in its pool: "ready" means every
    /// worker can be placed on, not merely that the router listens (it answers 503 until a first worker joined).</summary>
    private static async Task WaitReadyAsync(ChildProcess router, string url, int workers, CancellationToken cancellationToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        int inPool = 0;
        while (DateTime.UtcNow < deadline)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (router.HasExited) throw new InvalidOperationException($"the router exited during start. Its last output:{Environment.NewLine}{router.Tail}");
            try
            {
                using var response = await http.GetAsync($"{url}/readyz", cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
                    inPool = body.RootElement.GetProperty("workers_in_pool").GetInt32();
                    if (inPool >= workers) return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                // A slow answer during start: ask again.
            }
            await Task.Delay(200, cancellationToken);
        }
        throw new InvalidOperationException($"the router at {url} had {inPool} of {workers} workers in its pool after 60 s. Its last output:{Environment.NewLine}{router.Tail}");
    }

    private static bool IsHostPort(string address)
    {
        int colon = address.LastIndexOf(':');
        return colon > 0 && int.TryParse(address[(colon + 1)..], out int p) && p is > 0 and < 65536;
    }
}
