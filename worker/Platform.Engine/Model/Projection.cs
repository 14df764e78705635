// A linear layer (y = x Wᵀ + b) that picks its kernel by batch size. Decode
// steps have a handful of token rows, where the step is bound by streaming W
// from memory: our AVX2 GEMV over both cores reads W at ~0.8 of the streaming
// bandwidth against ~0.3 for libtorch's one-core GEMV (bench `kernels`), and
// batch 8 costs it 1.3–2.2× batch 1 where libtorch pays 3×. Prefill and large
// batches are compute-bound GEMMs, which libtorch does well.
using Platform.Engine.Kernels;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public sealed unsafe class Projection
{
    /// <summary>Up to this many rows go to our GEMV; more go to libtorch (see header).</summary>
    public const int MaxGemvRows = 16;

    private readonly float* _weight;
    private readonly float* _bias;

    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public int OutFeatures { get; }
    public int InFeatures { get; }
    /// <summary>Set false to force libtorch for every batch size (benchmarks' baseline).</summary>
    public static bool UseGemv { get; set; } = true;

    public Projection(Tensor weight, Tensor? bias)
    {
        Weight = weight;
        Bias = bias;
        OutFeatures = (int)weight.shape[0];
        InFeatures = (int)weight.shape[1];
        if (weight.dtype == ScalarType.Float32 && weight.is_contiguous() && weight.device_type == DeviceType.CPU)
        {
            _weight = TensorPointers.Float32(weight);
            if (bias is not null) _bias = bias.is_contiguous() ? TensorPointers.Float32(bias) : throw new ArgumentException("bias must be contiguous");
        }
    }

    /// <summary>True when the raw-pointer path (<see cref="Forward(float*, int, float*)"/>) is available.</summary>
    public bool HasRawWeights => _weight != null;

    /// <summary>y[rows, Out] = x[rows, In] Wᵀ + b on raw float32 buffers through the GEMV (rows ≤ <see cref="MaxGemvRows"/>).</summary>
    public void Forward(float* x, int rows, float* y) => Gemv.MatVecF32(_weight, OutFeatures, InFeatures, x, rows, y, _bias);

    public Tensor Forward(Tensor x)
    {
        long rows = x.shape[0];
        if (!UseGemv || _weight == null || rows > MaxGemvRows || x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU)
            return torch.nn.functional.linear(x, Weight, Bias);
        var input = x.contiguous();
        var output = torch.empty([rows, OutFeatures], ScalarType.Float32);
        fixed (byte* px = input.bytes)
        fixed (byte* py = output.bytes)
        {
            Gemv.MatVecF32(_weight, OutFeatures, InFeatures, (float*)px, (int)rows, (float*)py, _bias);
        }
        return output;
    }
}
