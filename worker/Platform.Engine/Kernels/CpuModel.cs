// Which x86 core the process runs on, for the few choices the instruction set alone does not
// settle. AMD Zen 4 (family 19h with AVX-512) executes each 512-bit operation as two 256-bit
// halves, so AVX-512 brings it fewer instructions but no more arithmetic or load width; on the CI's
// EPYC the AVX2 float GEMVs streamed weights faster than the AVX-512 ones (Gemv.FloatPath), except fp32
// at batch 1 (Gemv.F32Path). On AMD cores the GEMVs' weight prefetch is non-temporal (Gemv.Prefetch).
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

internal static class CpuModel
{
    /// <summary>True on an AMD family 19h core that has AVX-512F: Zen 4 (Zen 3, the same family, has no AVX-512).</summary>
    public static bool IsAmdZen4 { get; } = DetectZen4();

    /// <summary>True on any AMD x86 core ("AuthenticAMD").</summary>
    public static bool IsAmd { get; } = DetectAmd();

    private static bool DetectAmd()
    {
        if (!X86Base.IsSupported) return false;
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        // "AuthenticAMD" in EBX, EDX, ECX.
        return ebx == 0x68747541 && edx == 0x69746E65 && ecx == 0x444D4163;
    }

    private static bool DetectZen4()
    {
        if (!Avx512F.IsSupported || !DetectAmd()) return false;
        int eax = X86Base.CpuId(1, 0).Eax;
        int family = (eax >> 8) & 0xF;
        if (family == 0xF) family += (eax >> 20) & 0xFF;
        return family == 0x19;
    }
}
