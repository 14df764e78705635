// `platform up`'s memory rule: what the machine can still give (the smaller of MemAvailable and this
// process's cgroup remainder, KvMemoryBudget), less room for the router and the embedded store,
// divided equally among the N workers. Each worker gets its share as --memory-budget and sizes its KV
// pool inside it, so N workers together never plan on more memory than the machine has (before, each
// sized its pool from the same MemAvailable as if it were alone).
using Platform.Engine;

namespace Platform.Cli;

public static class WorkerMemory
{
    /// <summary>Kept for the router process: ASP.NET, the tokenizer, request bodies in flight.</summary>
    public const long RouterReserveBytes = 1L << 30;

    /// <summary>A worker needs at least this beyond its host KV tier for weights of a small model and a KV pool.</summary>
    public const long MinimumWorkerBytes = 512L << 20;

    /// <summary>Each worker's budget: (available − router − store) / workers; null when that leaves less than <see cref="MinimumWorkerBytes"/> plus the host tier.</summary>
    public static long? PerWorkerBudget(long availableBytes, int workers, long storeBytes, long hostTierBytesPerWorker)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        long share = (availableBytes - RouterReserveBytes - storeBytes) / workers;
        return share >= MinimumWorkerBytes + hostTierBytesPerWorker ? share : null;
    }

    /// <summary>The budget of each of <paramref name="workers"/> workers on this machine.</summary>
    public static long? PerWorkerBudget(int workers, long storeBytes, long hostTierBytesPerWorker) =>
        PerWorkerBudget(KvMemoryBudget.Host.AvailableBytes(), workers, storeBytes, hostTierBytesPerWorker);
}
