// Process-wide knobs for the decode kernels' worker pool (see KernelPool).
// Count is how many threads (calling thread included) a kernel call may use; default is
// Environment.ProcessorCount, because single-token GEMV is memory-bound and one core alone
// only reaches about half the DRAM bandwidth on the 2-core target (36 vs 72 GB/s measured).
// SpinMicroseconds is how long an idle helper spins before parking on a semaphore: decode
// issues ~150 GEMV calls per token a few tens of microseconds apart, so a helper that spins
// 50 us stays hot for the whole forward pass while a parked one costs a futex wake (5-30 us
// in this VM) on the first call of the next token. Lower it if the spinning competes with
// libtorch's own threads between calls.
namespace Platform.Engine.Kernels;

public static class KernelThreads
{
    /// <summary>Upper bound on <see cref="Count"/>; more threads than this never helps a GEMV.</summary>
    public const int MaxThreads = 64;

    private static int _count = Math.Clamp(Environment.ProcessorCount, 1, MaxThreads);
    private static int _spinMicroseconds = 50;

    /// <summary>
    /// Threads a kernel call may use, the calling thread included (1 = run inline, no helpers).
    /// Default <see cref="Environment.ProcessorCount"/>. Takes effect on the next call.
    /// </summary>
    public static int Count
    {
        get => Volatile.Read(ref _count);
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, MaxThreads);
            Volatile.Write(ref _count, value);
        }
    }

    /// <summary>How long an idle helper thread spins waiting for the next call before it parks.</summary>
    public static int SpinMicroseconds
    {
        get => Volatile.Read(ref _spinMicroseconds);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Volatile.Write(ref _spinMicroseconds, value);
        }
    }
}
