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
            case "kvtier":
                return await KvTierBench.Run(rest);
            default:
                Console.Error.WriteLine("usage: Platform.Bench <mode> [args]");
                Console.Error.WriteLine("modes:");
                Console.Error.WriteLine("  kernels [--shape OUTxIN]... [--batch N]... [--threads N] [--cached] [--chunk-kb N] [--seconds S]");
                Console.Error.WriteLine("      decode GEMV (fp32/fp16/TorchSharp linear) vs streaming-read bandwidth");
                Console.Error.WriteLine("  engine [--preset small|medium]... [--context N]... [--batch N]... [--decode-tokens N] [--json FILE]");
                Console.Error.WriteLine("      engine prefill/decode tokens/s at each context and batch, decode as a fraction of the bandwidth bound");
                Console.Error.WriteLine("  kvtier [--preset small] [--prefix N] [--threads N] [--json FILE]");
                Console.Error.WriteLine("      time to first token with a long shared prefix: cold, device, host, remote (redis-server), remote (embedded Garnet)");
                return 2;
        }
    }
}
