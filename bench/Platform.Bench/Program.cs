// Entry point of the benchmarks: `dotnet run -c Release --project bench/Platform.Bench -- <mode> [args]`.
// Each mode lives in its own file and takes the remaining arguments; add a case per mode.
namespace Platform.Bench;

internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "";
        string[] rest = args.Length > 0 ? args[1..] : [];
        switch (mode)
        {
            case "kernels":
                return KernelBench.Run(rest);
            case "engine":
                return await EngineBench.Run(rest);
            case "dist":
                return await DistBench.Run(rest);
            case "router":
                return await Router.RouterBench.Run(rest);
            case "kvtier":
                return await KvTierBench.Run(rest);
            case "longprompt":
                return await Router.LongPromptBench.Run(rest);
            case "steptarget":
                return await StepTargetBench.Run(rest);
            case "migration":
                return await Router.MigrationBench.Run(rest);
            case "soak":
                return await SoakBench.Run(rest);
            case "weights":
                return await WeightWidthBench.Run(rest);
            default:
                Console.Error.WriteLine("usage: Platform.Bench <mode> [args]");
                Console.Error.WriteLine("modes:");
                Console.Error.WriteLine("  kernels [--shape OUTxIN]... [--batch N]... [--threads N] [--cached] [--chunk-kb N] [--kblock N] [--f16] [--seconds S] [--vector256]");
                Console.Error.WriteLine("      decode GEMV (fp32/fp16/bf16/TorchSharp linear) vs streaming-read bandwidth");
                Console.Error.WriteLine("  engine [--preset small|medium]... [--context N[,N...]]... [--batch N[,N...]]... [--decode-tokens N] [--max-prefill-tokens N] [--json FILE]");
                Console.Error.WriteLine("         [--peer-llamacpp DIR] [--peer-llama2c PATH] [--peer-preset medium] [--peer-tokens N] [--peer-start-only] [--rounds N] [--device cpu|cuda[:N]] [--path generic|native]...");
                Console.Error.WriteLine("      engine prefill tok/s and GFLOP/s, TTFT, decode tokens/s at each context and batch against the bandwidth bound and");
                Console.Error.WriteLine("      the matmul rate, with PNG plots; with peers: batch-1 decode and start beside llama.cpp and llama2.c on the same weights");
                Console.Error.WriteLine("  dist [--preset small] [--worker-kv-tokens M] [--workers N]... [--decode-tokens N] [--json FILE]");
                Console.Error.WriteLine("      DistAttention: largest servable prompt with N workers, decode slowdown across two workers");
                Console.Error.WriteLine("  router [--quick] [--workers N] [--rate R] [--requests N | --duration S] [--groups N] [--conversations-per-group N]");
                Console.Error.WriteLine("         [--system-prompt-tokens N] [--turns N] [--output-tokens N] [--seed N] [--policies a,b,c] [--json FILE]");
                Console.Error.WriteLine("      placement policies on a shared-prefix multi-turn workload over real worker and router processes");
                Console.Error.WriteLine("  kvtier [--preset small] [--prefix N] [--threads N] [--json FILE]");
                Console.Error.WriteLine("      time to first token with a long shared prefix: cold, device, host, remote (redis-server), remote (embedded Garnet)");
                Console.Error.WriteLine("  longprompt [--quick] [--sizes 4096,8192,16384,32000] [--lengths 1024,...,32000] [--shorts N] [--interval S] [--kv-tokens N]");
                Console.Error.WriteLine("             [--json FILE] [--svg-dir DIR]");
                Console.Error.WriteLine("      TTFT against prompt length, and of short requests during a long prefill (router + one worker); two SVG charts");
                Console.Error.WriteLine("  weights [--preset medium] [--checkpoint bf16|f16] [--batch N]... [--tokens N] [--rounds N] [--threads N] [--no-int8] [--json FILE]");
                Console.Error.WriteLine("      decode tok/s with narrow weights (--weight-dtype auto) vs widened to float32 vs int8 (--quantization int8), same checkpoint, interleaved rounds");
                Console.Error.WriteLine("  steptarget [--target-ms N]... [--context N]... [--rounds N] [--threads N] [--json FILE]");
                Console.Error.WriteLine("      small preset: prefill tokens/s and step times per step-time target at 4K/16K/32K; short TTFT and decode gaps during a 32K prefill");
                Console.Error.WriteLine("  migration [--quick] [--rounds N] [--prompt TOKENS] [--max-tokens N] [--json FILE]");
                Console.Error.WriteLine("      the gap in a stream when its worker is SIGKILLed (request migration), KV tier off vs remote (redis-server)");
                Console.Error.WriteLine("  soak [--minutes M] [--concurrency C] [--prompt TOKENS] [--garnet-memory SIZE] [--kv-host-memory SIZE] [--json FILE] [--svg FILE]");
                Console.Error.WriteLine("      platform up under sustained new-prompt traffic: each process's RSS over time, where it plateaus");
                return 2;
        }
    }
}
