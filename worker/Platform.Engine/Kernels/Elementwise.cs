// The element-wise steps of the native decode step (LlamaModel.DecodeStep) between its GEMVs:
// RMSNorm of the residual stream and SwiGLU (silu(gate) * up). Both run on the calling thread
// while the kernel pool's helper spins idle, so every microsecond here is lost twice; in scalar
// code (one MathF.Exp per intermediate feature) SwiGLU alone cost ~124k exps per token on the
// TinyLlama shape. These are the vector versions, on the same instruction set as Gemv
// (Gemv.ActivePath: 16 lanes on AVX-512, 8 on AVX2, scalar otherwise, so tests force each path
// through the same switches). Numerics: fp32 with fp32 sums of squares (the scalar code summed
// in double); silu uses the runtime's vector exp, within a few ulp of MathF.Exp. The tests hold
// both to a float64 reference on every path.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Platform.Engine.Kernels;

public static unsafe class Elementwise
{
    /// <summary>
    /// y[r, i] = x[r, i] * weight[i] / sqrt(mean_i(x[r, i]^2) + eps) for each of <paramref name="rows"/> rows of
    /// <paramref name="width"/> values (contiguous). y may be x.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* weight, float* y, int rows, int width, float eps)
    {
        GemvPath path = Gemv.ActivePath;
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * width, yr = y + (long)r * width;
            float scale = 1f / MathF.Sqrt(SumOfSquares(xr, width, path) / width + eps);
            int i = 0;
            if (path == GemvPath.Vector512)
            {
                var s = Vector512.Create(scale);
                for (; i <= width - 16; i += 16)
                    Vector512.Store(Vector512.Load(xr + i) * s * Vector512.Load(weight + i), yr + i);
            }
            else if (path == GemvPath.Vector256)
            {
                var s = Vector256.Create(scale);
                for (; i <= width - 8; i += 8)
                    Vector256.Store(Vector256.Load(xr + i) * s * Vector256.Load(weight + i), yr + i);
            }
            for (; i < width; i++)
                yr[i] = xr[i] * scale * weight[i];
        }
    }

    private static float SumOfSquares(float* x, int n, GemvPath path)
    {
        int i = 0;
        float sum = 0;
        if (path == GemvPath.Vector512)
        {
            Vector512<float> a = Vector512<float>.Zero, b = a;
            for (; i <= n - 32; i += 32)
            {
                Vector512<float> u = Vector512.Load(x + i), v = Vector512.Load(x + i + 16);
                a = Vector512.FusedMultiplyAdd(u, u, a);
                b = Vector512.FusedMultiplyAdd(v, v, b);
            }
            sum = Vector512.Sum(a + b);
        }
        else if (path == GemvPath.Vector256)
        {
            Vector256<float> a = Vector256<float>.Zero, b = a;
            for (; i <= n - 16; i += 16)
            {
                Vector256<float> u = Vector256.Load(x + i), v = Vector256.Load(x + i + 8);
                a = Vector256.FusedMultiplyAdd(u, u, a);
                b = Vector256.FusedMultiplyAdd(v, v, b);
            }
            sum = Vector256.Sum(a + b);
        }
        for (; i < n; i++)
            sum += x[i] * x[i];
        return sum;
    }

    /// <summary>
    /// output[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i &lt; <paramref name="count"/>.
    /// output may be gate or up.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SwiGlu(float* gate, float* up, float* output, int count)
    {
        GemvPath path = Gemv.ActivePath;
        int i = 0;
        if (path == GemvPath.Vector512)
        {
            for (; i <= count - 16; i += 16)
            {
                Vector512<float> g = Vector512.Load(gate + i);
                Vector512.Store(g / (Vector512<float>.One + Vector512.Exp(-g)) * Vector512.Load(up + i), output + i);
            }
        }
        else if (path == GemvPath.Vector256)
        {
            for (; i <= count - 8; i += 8)
            {
                Vector256<float> g = Vector256.Load(gate + i);
                Vector256.Store(g / (Vector256<float>.One + Vector256.Exp(-g)) * Vector256.Load(up + i), output + i);
            }
        }
        for (; i < count; i++)
            output[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
    }
}
