// A KV pool is reserved, not filled: a large pool adds next to nothing to the process's resident
// memory until blocks are written, yet reads as zeros everywhere (attention over a partly written
// block must never meet garbage), and written blocks hold what was written.
using Platform.Engine.KvCache;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

public sealed class LazyKvPoolTests
{
    private static long ResidentBytes() =>
        long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void A_large_pool_is_committed_only_where_it_is_written_and_reads_zero_elsewhere(ScalarType dtype)
    {
        if (!OperatingSystem.IsLinux()) return;
        // 2 layers × K and V × 8,192 blocks × 16 slots × 8 heads × 64 = 1 GiB in float32 (0.5 GiB in bf16).
        long before = ResidentBytes();
        using var store = new PagedKvStore(2, 8192, 16, 8, 64, dtype);
        long reserved = 2L * 2 * 8192 * 16 * 8 * 64 * store.ElementSize;
        long grown = ResidentBytes() - before;
        Assert.True(grown < reserved / 8, $"a {reserved >> 20} MiB pool made the process {grown >> 20} MiB larger");

        using var scope = NewDisposeScope();
        // Never-written slots read as zeros, at the start, in the middle and at the very end.
        var probe = torch.tensor(new long[] { 0, 1, 65_000, 131_071 });
        var (k, v) = store.Gather(1, probe);
        Assert.Equal(0.0, k.abs().sum().ToDouble());
        Assert.Equal(0.0, v.abs().sum().ToDouble());

        // Written slots hold the values.
        var slots = torch.tensor(new long[] { 5, 70_000 });
        var values = torch.ones([2, 8, 64], dtype) * 3;
        store.Write(0, slots, values, values * 2);
        var (k2, v2) = store.Gather(0, slots);
        Assert.Equal(3.0 * 2 * 8 * 64, k2.to_type(ScalarType.Float64).sum().ToDouble());
        Assert.Equal(6.0 * 2 * 8 * 64, v2.to_type(ScalarType.Float64).sum().ToDouble());
        Assert.Equal(0.0, store.Gather(0, torch.tensor(new long[] { 4, 6, 69_999 })).K.abs().sum().ToDouble());
    }
}
