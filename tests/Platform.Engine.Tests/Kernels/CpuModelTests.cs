// CpuModel's CPUID reading against the kernel's own account of the CPU (/proc/cpuinfo): Zen 4 is
// an AMD family 25 (19h) core with avx512f, and the float GEMVs prefer AVX2 exactly there.
using System.Globalization;
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class CpuModelTests
{
    [Fact]
    public void Zen4_detection_agrees_with_proc_cpuinfo_and_decides_the_float_gemv_path()
    {
        if (!File.Exists("/proc/cpuinfo") || !System.Runtime.Intrinsics.X86.X86Base.IsSupported) return;
        var fields = File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0)
            .Select(l => l.Split(':', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0].Trim(), p => p[1].Trim());
        bool amd = fields.GetValueOrDefault("vendor_id") == "AuthenticAMD";
        int family = int.Parse(fields.GetValueOrDefault("cpu family") ?? "0", CultureInfo.InvariantCulture);
        bool avx512 = (fields.GetValueOrDefault("flags") ?? "").Split(' ').Contains("avx512f");
        bool zen4 = amd && family == 25 && avx512;
        Assert.Equal(zen4, CpuModel.IsAmdZen4);
        Assert.Equal(zen4, Gemv.PreferVector256);
        if (Gemv.ActivePath == GemvPath.Vector512)
            Assert.Equal(zen4 ? GemvPath.Vector256 : GemvPath.Vector512, Gemv.FloatPath);
        else
            Assert.Equal(Gemv.ActivePath, Gemv.FloatPath);
        // fp32 at batch 1 keeps the best path; from two rows it follows FloatPath.
        Assert.Equal(Gemv.ActivePath, Gemv.F32Path(1));
        Assert.Equal(Gemv.FloatPath, Gemv.F32Path(4));
    }
}
