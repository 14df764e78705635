// The kernel worker pool: every chunk runs exactly once, exceptions on the calling thread or on
// a helper surface to the caller without hanging the pool, re-entrant and concurrent calls fall
// back to inline execution, and the pool keeps working after all of that. Hang guards use
// generous timeouts; nothing here asserts on speed.
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed unsafe class KernelPoolTests
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(60);

    private struct CountContext
    {
        public int* Counts;
        public int CallerThreadId;
        public int HelperClaims;
        public int Mode; // 0 count, 1 throw on every chunk, 2 throw on helpers only, 3 re-enter the pool
    }

    private static void CountBody(void* p, int chunk)
    {
        var context = (CountContext*)p;
        bool onCaller = Environment.CurrentManagedThreadId == context->CallerThreadId;
        if (!onCaller)
            Interlocked.Increment(ref context->HelperClaims);
        switch (context->Mode)
        {
            case 1:
                throw new InvalidOperationException($"chunk {chunk}");
            case 2:
                if (onCaller)
                {
                    // Hold the caller's first chunk until a helper has claimed one, so the helper does throw.
                    var spin = new SpinWait();
                    long deadline = Environment.TickCount64 + 10_000;
                    while (Volatile.Read(ref context->HelperClaims) == 0 && Environment.TickCount64 < deadline)
                        spin.SpinOnce();
                    break;
                }
                throw new InvalidOperationException($"helper chunk {chunk}");
            case 3:
                CountContext inner = new() { Counts = context->Counts + 1000, CallerThreadId = Environment.CurrentManagedThreadId };
                KernelPool.Run(&CountBody, &inner, 10, 2);
                break;
        }
        Interlocked.Increment(ref context->Counts[chunk]);
    }

    private static int[] RunCount(int chunks, int threads, int mode)
    {
        var counts = new int[2000];
        fixed (int* c = counts)
        {
            var context = new CountContext { Counts = c, CallerThreadId = Environment.CurrentManagedThreadId, Mode = mode };
            KernelPool.Run(&CountBody, &context, chunks, threads);
        }
        return counts;
    }

    private static void WithinGuard(Action action)
    {
        var task = Task.Factory.StartNew(action, TaskCreationOptions.LongRunning);
        Assert.True(task.Wait(HangGuard), "kernel pool call did not return");
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(2, 2)]
    [InlineData(7, 2)]
    [InlineData(500, 2)]
    [InlineData(500, 3)]
    [InlineData(500, 1)]
    public void Every_chunk_runs_exactly_once(int chunks, int threads)
    {
        WithinGuard(() =>
        {
            for (int repeat = 0; repeat < 200; repeat++)
            {
                int[] counts = RunCount(chunks, threads, mode: 0);
                Assert.All(counts.Take(chunks), c => Assert.Equal(1, c));
                Assert.All(counts.Skip(chunks), c => Assert.Equal(0, c));
            }
        });
    }

    [Fact]
    public void Exception_on_every_thread_is_rethrown_and_pool_recovers()
    {
        WithinGuard(() =>
        {
            for (int repeat = 0; repeat < 20; repeat++)
            {
                Assert.Throws<InvalidOperationException>(() => RunCount(100, 2, mode: 1));
                int[] counts = RunCount(100, 2, mode: 0);
                Assert.All(counts.Take(100), c => Assert.Equal(1, c));
            }
        });
    }

    [Fact]
    public void Exception_on_helper_only_is_rethrown_on_caller_and_pool_recovers()
    {
        WithinGuard(() =>
        {
            for (int repeat = 0; repeat < 20; repeat++)
            {
                var error = Assert.Throws<InvalidOperationException>(() => RunCount(100, 2, mode: 2));
                Assert.StartsWith("helper chunk", error.Message, StringComparison.Ordinal);
                int[] counts = RunCount(100, 2, mode: 0);
                Assert.All(counts.Take(100), c => Assert.Equal(1, c));
            }
        });
    }

    [Fact]
    public void Reentrant_call_runs_inline()
    {
        WithinGuard(() =>
        {
            int[] counts = RunCount(4, 2, mode: 3);
            Assert.All(counts.Take(4), c => Assert.Equal(1, c));
            // Each of the 4 outer chunks ran the 10 inner chunks on the same counters.
            Assert.All(counts.Skip(1000).Take(10), c => Assert.Equal(4, c));
        });
    }

    [Fact]
    public void Helpers_survive_parking_between_calls()
    {
        int savedSpin = KernelThreads.SpinMicroseconds;
        try
        {
            KernelThreads.SpinMicroseconds = 0;
            WithinGuard(() =>
            {
                for (int repeat = 0; repeat < 50; repeat++)
                {
                    int[] counts = RunCount(64, 2, mode: 0);
                    Assert.All(counts.Take(64), c => Assert.Equal(1, c));
                    if (repeat % 10 == 0)
                        Thread.Sleep(5);
                }
            });
        }
        finally
        {
            KernelThreads.SpinMicroseconds = savedSpin;
        }
    }

    [Fact]
    public void Thread_count_setting_is_validated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelThreads.Count = 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelThreads.Count = KernelThreads.MaxThreads + 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelThreads.SpinMicroseconds = -1);
    }
}
