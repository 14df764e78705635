// A linear layer (y = x Wᵀ + b) that picks its kernel by batch size. Decode
// steps have 1..64 token rows: up to MaxGemvRows rows go to our kernels, which
// stream W once per call over both cores (Gemm.Multiply*: Gemv's tiles below
// Gemm.GemvRowsLimit* rows, where the step is bound by streaming W from memory,
// the GEMM's packed register tiles above, where it is bound by FMAs). Larger
// batches (prefill chunks) go to libtorch's GEMM.
//
// W may be narrower than the activations: with fp32 compute, W stays in the
// checkpoint's bfloat16 or float16 (the weight dtype) and our kernels widen it in
// registers or a per-thread L1/L2 tile, so decode never widens W in memory.
// libtorch's linear needs W in the activations' dtype, so above MaxGemvRows a
// narrow W is widened one block of output rows at a time (WideningBlockBytes of
// fp32, freed after its GEMM): resident memory stays the narrow W plus one block,
// and the widening pass (a read of W at memory speed) is small next to a prefill
// GEMM over more than 64 rows.
//
// With --quantization int8, W is a uint8 tensor of QuantizationQ8 rows (FromInt8Rows): the GEMV reads
// the int8 blocks, and above MaxGemvRows each block of output rows is dequantized to fp32 the
// same way (LinearDequantizing), so prefill still runs on libtorch's GEMM.
using Platform.Engine.Kernels;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public sealed unsafe class Projection
{
    /// <summary>Up to this many rows go to our kernels (GEMV and GEMM, see header); more go to libtorch.</summary>
    public const int MaxGemvRows = 64;

    /// <summary>fp32 bytes of one widened block of a narrow W on the libtorch path (see header).</summary>
    internal static long WideningBlockBytes { get; set; } = 8L * 1024 * 1024;

    private readonly void* _weight;
    private readonly float* _bias;

    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public int OutFeatures { get; }
    public int InFeatures { get; }
    /// <summary>Set false to force libtorch for every batch size (benchmarks' baseline).</summary>
    public static bool UseGemv { get; set; } = true;

    /// <summary>True when <see cref="Weight"/> holds int8 rows in <see cref="QuantizationQ8"/>'s format ([Out, RowBytes] uint8).</summary>
    public bool IsInt8 { get; }

    /// <summary>A projection over int8 rows (<see cref="QuantizationQ8.Quantize"/>'s output) of <paramref name="inFeatures"/> weights each.</summary>
    public static Projection FromInt8Rows(Tensor packed, int inFeatures, Tensor? bias) => new(packed, inFeatures, bias);

    private Projection(Tensor packed, int inFeatures, Tensor? bias)
    {
        if (packed.dtype != ScalarType.Byte || packed.dim() != 2 || packed.shape[1] != QuantizationQ8.RowBytes(inFeatures)
            || !packed.is_contiguous() || packed.device_type != DeviceType.CPU)
            throw new ArgumentException($"int8 weights must be a contiguous CPU uint8 tensor [outFeatures, {QuantizationQ8.RowBytes(inFeatures)}].", nameof(packed));
        if (bias is not null && (bias.dtype != ScalarType.Float32 || !bias.is_contiguous()))
            throw new ArgumentException("an int8 projection's bias must be a contiguous float32 tensor.", nameof(bias));
        Weight = packed;
        Bias = bias;
        IsInt8 = true;
        OutFeatures = (int)packed.shape[0];
        InFeatures = inFeatures;
        _weight = TensorPointers.Data(packed);
        if (bias is not null) _bias = TensorPointers.Float32(bias);
    }

    public Projection(Tensor weight, Tensor? bias)
    {
        Weight = weight;
        Bias = bias;
        OutFeatures = (int)weight.shape[0];
        InFeatures = (int)weight.shape[1];
        bool kernelWidth = weight.dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16;
        if (kernelWidth && weight.is_contiguous() && weight.device_type == DeviceType.CPU
            && (bias is null || (bias.dtype == ScalarType.Float32 && bias.is_contiguous())))
        {
            _weight = TensorPointers.Data(weight);
            if (bias is not null) _bias = TensorPointers.Float32(bias);
        }
    }

    /// <summary>True when the raw-pointer path (<see cref="Forward(float*, int, float*)"/>) is available.</summary>
    public bool HasRawWeights => _weight != null;

    /// <summary>
    /// y[rows, Out] = x[rows, In] Wᵀ + b on raw float32 buffers through our kernels (rows ≤ <see cref="MaxGemvRows"/>
    /// is the intended use; any count is correct); W is read once per call in its own width.
    /// </summary>
    public void Forward(float* x, int rows, float* y)
    {
        if (IsInt8)
        {
            Gemm.MultiplyQ8((byte*)_weight, OutFeatures, InFeatures, x, rows, y, _bias);
            return;
        }
        switch (Weight.dtype)
        {
            case ScalarType.BFloat16:
                Gemm.MultiplyBF16((ushort*)_weight, OutFeatures, InFeatures, x, rows, y, _bias);
                break;
            case ScalarType.Float16:
                Gemm.MultiplyF16((Half*)_weight, OutFeatures, InFeatures, x, rows, y, _bias);
                break;
            default:
                Gemm.MultiplyF32((float*)_weight, OutFeatures, InFeatures, x, rows, y, _bias);
                break;
        }
    }

    public Tensor Forward(Tensor x)
    {
        long rows = x.shape[0];
        if (IsInt8 && (!UseGemv || rows == 0 || rows > MaxGemvRows || x.dtype != ScalarType.Float32))
            return LinearDequantizing(x);
        if (!UseGemv || _weight == null || rows == 0 || rows > MaxGemvRows || x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU)
            return ForwardLibtorch(x);
        var input = x.contiguous();
        var output = torch.empty([rows, OutFeatures], ScalarType.Float32);
        Forward((float*)TensorPointers.Data(input), (int)rows, (float*)TensorPointers.Data(output));
        return output;
    }

    /// <summary>y = x Wᵀ + b through libtorch only, on whatever device x and W are (the device-generic path).</summary>
    public Tensor ForwardLibtorch(Tensor x) => Weight.dtype == x.dtype ? torch.nn.functional.linear(x, Weight, Bias) : LinearWidening(x);

    /// <summary>libtorch's linear over a W narrower than x, widened one block of output rows at a time (see header).</summary>
    private Tensor LinearWidening(Tensor x)
    {
        long rows = x.shape[0];
        var output = torch.empty([rows, OutFeatures], x.dtype, x.device);
        long blockRows = Math.Max(1, WideningBlockBytes / ((long)InFeatures * TorchDtypes.ElementSize(x.dtype)));
        for (long start = 0; start < OutFeatures; start += blockRows)
        {
            long count = Math.Min(blockRows, OutFeatures - start);
            using var narrowBlock = Weight.narrow(0, start, count);
            using var block = narrowBlock.to_type(x.dtype);
            using var biasBlock = Bias?.narrow(0, start, count).to_type(x.dtype);
            using var product = torch.nn.functional.linear(x, block, biasBlock);
            using var target = output.narrow(1, start, count);
            target.copy_(product);
        }
        return output;
    }

    /// <summary>libtorch's linear over int8 W, dequantized to fp32 one block of output rows at a time (see header).</summary>
    private Tensor LinearDequantizing(Tensor x)
    {
        if (x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU)
            throw new InvalidOperationException($"an int8 projection takes float32 CPU activations, got {x.dtype} on {x.device_type}.");
        long rows = x.shape[0];
        var output = torch.empty([rows, OutFeatures], ScalarType.Float32);
        int blockRows = (int)Math.Clamp(WideningBlockBytes / ((long)InFeatures * sizeof(float)), 1, OutFeatures);
        using var block = torch.empty([blockRows, InFeatures], ScalarType.Float32);
        for (int start = 0; start < OutFeatures; start += blockRows)
        {
            int count = Math.Min(blockRows, OutFeatures - start);
            QuantizationQ8.DequantizeRows((byte*)_weight, InFeatures, start, count, TensorPointers.Float32(block));
            using var rowsOfBlock = block.narrow(0, 0, count);
            using var biasBlock = Bias?.narrow(0, start, count);
            using var product = torch.nn.functional.linear(x, rowsOfBlock, biasBlock);
            using var target = output.narrow(1, start, count);
            target.copy_(product);
        }
        return output;
    }
}
