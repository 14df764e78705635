// Choosing a device: the --device spelling (Platform.Core's ComputeDevice), the
// refusal of a device this machine does not have (a clear message naming it,
// before any weight is loaded), and the KV pool sized from a device's memory.
using Platform.Core.Workers;
using Platform.Engine.Torch;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

public sealed class DeviceStartupTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("cpu", "cpu", null)]
    [InlineData("CUDA", "cuda", null)]
    [InlineData("cuda:0", "cuda", 0)]
    [InlineData(" cuda:3 ", "cuda", 3)]
    public void Device_names_parse(string text, string kind, int? index)
    {
        var device = ComputeDevice.Parse(text);
        Assert.Equal((kind, index), (device.Kind, device.Index));
        Assert.Equal(device, ComputeDevice.Parse(device.ToString()));
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    [InlineData("")]
    public void Unknown_device_names_are_refused_with_the_accepted_forms(string text)
    {
        string? error = ComputeDevice.Validate(text);
        Assert.NotNull(error);
        Assert.Contains(ComputeDevice.Forms, error, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new EngineOptions { Device = text }.Validate());
    }

    /// <summary>A cuda device this machine lacks: cuda itself without a GPU (this build machine), else an ordinal past the last GPU.</summary>
    private static ComputeDevice MissingCudaDevice() =>
        torch.cuda.is_available() ? ComputeDevice.Cuda(torch.cuda.device_count()) : ComputeDevice.Cuda();

    [Fact]
    public void A_cuda_device_that_is_not_here_is_refused_naming_it()
    {
        var missing = MissingCudaDevice();
        string? reason = TorchDevices.Unavailable(missing);
        Assert.NotNull(reason);
        Assert.StartsWith($"--device {missing}:", reason, StringComparison.Ordinal);
        Assert.Null(TorchDevices.Unavailable(ComputeDevice.Cpu));
        output.WriteLine($"cuda available: {torch.cuda.is_available()}; refused: {reason}");
    }

    [Fact]
    public void Loading_an_engine_on_a_missing_device_fails_before_the_weights_with_that_message()
    {
        var missing = MissingCudaDevice();
        var error = Assert.Throws<DeviceUnavailableException>(() =>
            LlmEngine.Load(TestModels.TinyLlama, new EngineOptions { Device = missing.ToString(), NumKvBlocks = 8 }));
        Assert.Contains($"--device {missing}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_kv_pool_on_a_device_takes_its_fraction_of_the_free_device_memory()
    {
        var gpu = new Device(DeviceType.CUDA, 1);
        int? asked = null;
        var budget = new DeviceKvBudget(ordinal => { asked = ordinal; return 8L << 30; });
        Assert.Equal(4096, budget.PoolBlocks(new EngineOptions { KvCacheMemoryFraction = 0.5 }, 1L << 20, gpu));
        Assert.Equal(1, asked);
        Assert.Equal(3, budget.PoolBlocks(new EngineOptions { KvCacheBytes = 3L << 20 }, 1L << 20, gpu));
        Assert.Equal(7, budget.PoolBlocks(new EngineOptions { NumKvBlocks = 7 }, 1L << 20, gpu));
        Assert.Equal(1, new DeviceKvBudget(_ => 10).PoolBlocks(new EngineOptions(), 1L << 20, gpu));
    }

    [Fact]
    public void Unknown_device_memory_asks_for_an_explicit_kv_size()
    {
        var error = Assert.Throws<DeviceUnavailableException>(() =>
            new DeviceKvBudget(_ => null).PoolBlocks(new EngineOptions(), 1L << 20, new Device(DeviceType.CUDA, 0)));
        Assert.Contains("--kv-bytes", error.Message, StringComparison.Ordinal);
        Assert.Contains("cuda:0", error.Message, StringComparison.Ordinal);
        Assert.Equal(12345L * 1024 * 1024, DeviceKvBudget.ParseMebibytes(" 12345\n"));
        Assert.Null(DeviceKvBudget.ParseMebibytes("[N/A]"));
    }
}
