// llama2.c as a peer: runs a run.c binary given by path (built by the user, e.g.
// `gcc -Ofast -fopenmp -march=native run.c -lm`) on a checkpoint and tokenizer.bin written by
// Llama2cExport, greedily (temperature 0), with OMP_NUM_THREADS threads, and reads the rate run.c
// prints ("achieved tok/s": every forward after the first, prompt positions included, which cost
// what a decode step costs).
using System.Globalization;

namespace Platform.Bench.Peers;

internal sealed class Llama2cPeer(string binary)
{
    public string Binary { get; } = File.Exists(binary)
        ? Path.GetFullPath(binary)
        : throw new ArgumentException($"--peer-llama2c: {binary} does not exist; build run.c with `gcc -Ofast -fopenmp -march=native run.c -lm -o run`");

    /// <summary>Runs <paramref name="steps"/> forwards from <paramref name="promptText"/>; returns run.c's tok/s.</summary>
    public async Task<double> DecodeTokensPerSecondAsync(string checkpoint, string tokenizer, string promptText, int steps, int threads)
    {
        var run = (await PeerProcess.RunAsync(Binary,
            [checkpoint, "-z", tokenizer, "-t", "0", "-n", steps.ToString(CultureInfo.InvariantCulture), "-i", promptText],
            new Dictionary<string, string> { ["OMP_NUM_THREADS"] = threads.ToString(CultureInfo.InvariantCulture) }))
            .EnsureSuccess("llama2.c");
        string rate = run.Field("achieved tok/s:") ?? throw new InvalidOperationException($"llama2.c printed no rate: {run.Stderr}");
        return double.Parse(rate, CultureInfo.InvariantCulture);
    }
}
