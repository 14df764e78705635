// The streaming-read probe really reads its whole buffer (checked through the checksum of a
// buffer of ones) and returns a finite positive figure. Small buffer, no speed assertion.
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class MemoryBandwidthTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Reads_the_whole_buffer_and_reports_a_positive_rate(int threads)
    {
        long bytes = 4L * 1024 * 1024;
        double gbps = MemoryBandwidth.MeasureStreamingReadGBps(bytes, threads, repeats: 2);
        Assert.True(double.IsFinite(gbps) && gbps > 0, $"{gbps}");
        Assert.Equal(bytes / sizeof(float), (long)MemoryBandwidth.LastChecksum);
    }
}
