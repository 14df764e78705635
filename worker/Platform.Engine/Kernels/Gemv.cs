// Decode-time matrix-vector products: output[b, n] = bias[n] + sum_k weight[n, k] * input[b, k]
// for a handful of token rows (batch 1..16) against a row-major [outFeatures, inFeatures] weight.
// Weights are fp32, fp16 or bf16 (the checkpoint's own width: narrow weights are widened in
// registers, never in memory, so a step reads half the bytes); inputs, sums and outputs are fp32.
// Each call runs the AVX-512 kernels (Gemv.Avx512.cs) where the CPU has AVX512F, else AVX2+FMA
// (Gemv.Avx2.cs), else the portable ones; ForceVector256/ForcePortable pin a path for tests.
//
// Why our own: for one token TorchSharp's fp32 linear reads weights at ~24 GB/s (its GEMV runs
// on one core) while a two-core AVX2/FMA loop reads ~72 GB/s, and decode is bound by exactly
// that weight stream. The design point is that each weight row is streamed from DRAM once per
// call and reused from registers/L1 for every batch row, so batch 8 costs no more memory
// traffic than batch 1 (see Gemv.Avx2.cs for the register tiling). In time it costs 1.3-2.2x
// batch 1 for fp32 and 2.5-3.2x for fp16 (bench, TinyLlama shapes), because at batch 8 two AVX2
// cores run out of FMAs before DRAM runs out of bandwidth: ~28-35 GB/s fp32 and ~19 GB/s fp16
// against a streaming probe of 48-75 GB/s, still 8 tokens for the price of 1.3-3.
//
// Work split: outFeatures is cut into chunks of whole rows of ~256 KB of weights (at least
// 4 chunks per thread, rows a multiple of 2 for the 2-row batch 3-4 tile) that KernelPool hands
// out dynamically. 256 KB is ~7 us of streaming per core: large enough that the per-chunk atomic
// (~50-100 ns) and the prefetch ramp-up at each chunk start stay in the noise, small enough that
// a 2 MB k/v projection still splits into 8 chunks. A sweep of 64/256/1024 KB (5632 x 2048 and
// 2048 x 5632, batch 1 and 8) found 256 KB at least as good as either neighbour within the noise.
// Matrices under 64 KB run on the caller only.
//
// Threading: see KernelPool. Calls are meant to come from one engine thread at a time; a
// concurrent call is still correct (it runs single-threaded) but gets no parallelism.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Platform.Engine.Kernels;

/// <summary>Which instruction set a <see cref="Gemv"/> call runs on.</summary>
public enum GemvPath
{
    /// <summary>System.Numerics.Vector, any CPU.</summary>
    Portable,
    /// <summary>AVX2 + FMA, 8 fp32 lanes.</summary>
    Vector256,
    /// <summary>AVX-512F, 16 fp32 lanes.</summary>
    Vector512,
}

public static unsafe partial class Gemv
{
    /// <summary>Target weight bytes per work chunk (see header). Internal so the bench can sweep it.</summary>
    internal static int ChunkBytes { get; set; } = 256 * 1024;

    /// <summary>Below this many weight bytes a call runs on the calling thread only.</summary>
    internal static int ParallelThresholdBytes { get; set; } = 64 * 1024;

    /// <summary>Forces the portable (non-AVX2) path; for tests on AVX2 machines.</summary>
    internal static bool ForcePortable { get; set; }

    /// <summary>Forces the Vector256 (AVX2+FMA) path on a machine with AVX-512; for tests and the bench.</summary>
    internal static bool ForceVector256 { get; set; }

    /// <summary>True when the AVX2+FMA kernels are used on this machine.</summary>
    public static bool IsAccelerated => Avx2.IsSupported && Fma.IsSupported && !ForcePortable;

    /// <summary>True when this CPU has the AVX-512 kernels' instructions (AVX512F; FMA is part of it).</summary>
    public static bool Vector512Supported => Avx512F.IsSupported && IsAccelerated;

    /// <summary>The kernel family calls take now: AVX-512 where the CPU has it, else AVX2+FMA, else portable.</summary>
    public static GemvPath ActivePath =>
        !IsAccelerated ? GemvPath.Portable : Vector512Supported && !ForceVector256 ? GemvPath.Vector512 : GemvPath.Vector256;

    /// <summary>Pins the float GEMVs to the AVX-512 kernels even where <see cref="PreferVector256"/> holds; for tests and the bench.</summary>
    internal static bool ForceVector512 { get; set; }

    /// <summary>
    /// True where the CPU has AVX-512 but the fp32/bf16/f16 GEMVs stream weights faster on the AVX2 kernels: AMD Zen 4
    /// (CpuModel). Measured on the CI's EPYC with `bench kernels --avx2-beside` (both in the same rounds, 2 threads):
    /// the AVX2 kernels ran bf16 1.27-1.32x and fp32 1.00-1.11x as fast at batch 1, 1.17-1.23x at batch 4, and
    /// 1.02-1.19x at batch 8 and 16 in all but one cell (bf16 32000x2048 at 16: 0.97x); int8 ran alike (it keeps ActivePath).
    /// </summary>
    public static bool PreferVector256 { get; } = CpuModel.IsAmdZen4;

    /// <summary>The kernels the bf16 and f16 GEMVs (and fp32 from two rows, <see cref="F32Path"/>) take: <see cref="ActivePath"/>, but AVX2 where
    /// <see cref="PreferVector256"/> holds (unless <see cref="ForceVector512"/>). Gemm and int8 keep ActivePath.</summary>
    public static GemvPath FloatPath =>
        ActivePath == GemvPath.Vector512 && PreferVector256 && !ForceVector512 ? GemvPath.Vector256 : ActivePath;

    /// <summary>
    /// The kernels an fp32 GEMV of <paramref name="batch"/> token rows takes: <see cref="FloatPath"/>, except a single
    /// row, which keeps <see cref="ActivePath"/>. On a Zen 4 EPYC (2026-12-04, `bench kernels --avx2-beside`, TinyLlama
    /// shapes, three runs) the AVX-512 fp32 kernel streamed batch-1 weights 1.10-1.17x as fast as the AVX2 one in 10 of
    /// 11 cells (one even), while at batch 4 AVX2 stayed ahead (1.2-1.35x); bf16 and f16 at batch 1 were faster or
    /// even on AVX2.
    /// </summary>
    public static GemvPath F32Path(int batch) => batch == 1 ? ActivePath : FloatPath;

    /// <summary>
    /// output[b, n] = bias[n] + sum_k weight[n, k] * input[b, k] for b &lt; batch, with fp32 weights.
    /// weight is row-major [outFeatures, inFeatures]; input is [batch, inFeatures]; output is
    /// [batch, outFeatures] (all contiguous; output must not overlap the others); bias is
    /// [outFeatures] or null. Designed for batch 1..16 (larger batches work but belong to libtorch).
    /// Uses up to <see cref="KernelThreads.Count"/> threads; call from one thread at a time.
    /// </summary>
    public static void MatVecF32(float* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewJob(weight, outFeatures, inFeatures, input, batch, output, bias);
        Dispatch(ref job, F32Loader.RowBytes(inFeatures), F32Path(batch) switch
        {
            GemvPath.Vector512 => &ChunkF32Avx512,
            GemvPath.Vector256 => &ChunkF32Avx2,
            _ => &ChunkF32Portable,
        });
    }

    /// <summary>
    /// As <see cref="MatVecF32"/> with bfloat16 weights given as their raw 16-bit patterns (the upper
    /// half of an fp32). Each weight is widened in registers by a 16-bit shift, which is exact, so the
    /// result is fp32 compute on the bf16 values; products and sums are fp32. Any bit pattern is
    /// accepted (inf/NaN weights propagate as they would in fp32).
    /// </summary>
    public static void MatVecBF16(ushort* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewJob(weight, outFeatures, inFeatures, input, batch, output, bias);
        Dispatch(ref job, BF16Loader.RowBytes(inFeatures), FloatPath switch
        {
            GemvPath.Vector512 => &ChunkBF16Avx512,
            GemvPath.Vector256 => &ChunkBF16Avx2,
            _ => &ChunkBF16Portable,
        });
    }

    /// <summary>
    /// As <see cref="MatVecF32"/> with IEEE fp16 weights (converted to fp32 in registers; the
    /// products and sums are fp32). Inputs, bias and outputs are fp32. Weights must be finite
    /// (check once with <see cref="AllFinite"/>): inf/NaN weights give unspecified finite results
    /// on the AVX2 path. Inputs must stay below 2^72 in magnitude (activations are far smaller).
    /// </summary>
    public static void MatVecF16(Half* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias = null)
    {
        var job = NewJob(weight, outFeatures, inFeatures, input, batch, output, bias);
        if (!IsAccelerated)
        {
            Dispatch(ref job, F16Loader.RowBytes(inFeatures), &ChunkF16Portable);
            return;
        }

        DispatchScaled(ref job, F16Loader.RowBytes(inFeatures), FloatPath == GemvPath.Vector512 ? &ChunkF16Avx512 : &ChunkF16Avx2);
    }

    /// <summary>A call's arguments after the checks every entry point makes.</summary>
    private static Job NewJob(void* weight, int outFeatures, int inFeatures, float* input, int batch, float* output, float* bias)
    {
        Validate(weight, outFeatures, inFeatures, input, batch, output);
        return new Job
        {
            Weight = weight,
            OutFeatures = outFeatures,
            InFeatures = inFeatures,
            Input = input,
            Batch = batch,
            Output = output,
            Bias = bias,
            Scale = 1f,
        };
    }

    /// <summary>
    /// Dispatch for loaders that decode weights as w * 2^-112 (fp16, and int8 through its fp16 scale; see
    /// Gemv.Avx2.cs): the kernels read an input pre-scaled by 2^56 and scale the sums back by 2^56, both exact.
    /// </summary>
    private static void DispatchScaled(ref Job job, long rowBytes, delegate*<void*, int, void> body)
    {
        long inputCount = (long)job.Batch * job.InFeatures;
        float[] scaled = ScaledInputBuffer(inputCount);
        fixed (float* scaledInput = scaled)
        {
            ScaleInto(job.Input, scaledInput, inputCount, F16InputScale);
            job.Input = scaledInput;
            job.Scale = F16OutputScale;
            Dispatch(ref job, rowBytes, body);
        }
    }

    /// <summary>
    /// True when none of the <paramref name="count"/> fp16 values is inf or NaN. The AVX2
    /// <see cref="MatVecF16"/> assumes finite weights (see Gemv.Avx2.cs); model loaders call
    /// this once per fp16 weight tensor. Reads at memory speed (AVX2: 16 halves per compare).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool AllFinite(Half* values, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > 0 && values == null)
            throw new ArgumentNullException(nameof(values));
        ushort* bits = (ushort*)values;
        long i = 0;
        if (Avx2.IsSupported)
        {
            // A half is inf/NaN exactly when its 5 exponent bits are all ones.
            Vector256<ushort> exponent = Vector256.Create((ushort)0x7C00);
            Vector256<ushort> found = Vector256<ushort>.Zero;
            for (; i + 16 <= count; i += 16)
            {
                Vector256<ushort> e = Avx2.And(Avx.LoadVector256(bits + i), exponent);
                found = Avx2.Or(found, Avx2.CompareEqual(e, exponent));
            }
            if (!Avx.TestZ(found, found))
                return false;
        }
        for (; i < count; i++)
        {
            if ((bits[i] & 0x7C00) == 0x7C00)
                return false;
        }
        return true;
    }

    /// <summary>One call's arguments, shared with the pool threads by pointer.</summary>
    private struct Job
    {
        public void* Weight;
        public int OutFeatures;
        public int InFeatures;
        public float* Input;
        public int Batch;
        public float* Output;
        public float* Bias;
        public float Scale;
        public int RowsPerChunk;
    }

    private static void Dispatch(ref Job job, long rowBytes, delegate*<void*, int, void> body)
    {
        long totalBytes = rowBytes * job.OutFeatures;
        int threads = KernelThreads.Count;
        if (threads <= 1 || totalBytes < ParallelThresholdBytes)
        {
            job.RowsPerChunk = job.OutFeatures;
            fixed (Job* p = &job)
                body(p, 0);
            return;
        }

        long rows = Math.Max(1, ChunkBytes / rowBytes);
        long rowsForBalance = (job.OutFeatures + 4L * threads - 1) / (4L * threads);
        rows = Math.Min(rows, rowsForBalance);
        rows = (rows + 1) & ~1L;
        job.RowsPerChunk = (int)Math.Min(rows, job.OutFeatures);
        int chunks = (job.OutFeatures + job.RowsPerChunk - 1) / job.RowsPerChunk;
        fixed (Job* p = &job)
            KernelPool.Run(body, p, chunks, threads);
    }

    private static void Validate(void* weight, int outFeatures, int inFeatures, float* input, int batch, float* output)
    {
        if (weight == null)
            throw new ArgumentNullException(nameof(weight));
        if (input == null)
            throw new ArgumentNullException(nameof(input));
        if (output == null)
            throw new ArgumentNullException(nameof(output));
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
    }

    private static void RowRange(Job* job, int chunk, out int start, out int end)
    {
        start = chunk * job->RowsPerChunk;
        end = Math.Min(job->OutFeatures, start + job->RowsPerChunk);
    }

    // 2^56 up front and 2^56 after: the fp16 decode yields w * 2^-112 (see Gemv.Avx2.cs).
    internal const float F16InputScale = 72057594037927936f;  // 2^56
    internal const float F16OutputScale = 72057594037927936f; // 2^56

    [ThreadStatic]
    private static float[]? _scaledInput;

    private static float[] ScaledInputBuffer(long count)
    {
        float[]? buffer = _scaledInput;
        if (buffer is null || buffer.LongLength < count)
        {
            buffer = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(count, 4096)), pinned: true);
            _scaledInput = buffer;
        }
        return buffer;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void ScaleInto(float* source, float* destination, long count, float scale)
    {
        long i = 0;
        if (Avx.IsSupported)
        {
            var s = Vector256.Create(scale);
            for (; i + 8 <= count; i += 8)
                Avx.Store(destination + i, Avx.Multiply(Avx.LoadVector256(source + i), s));
        }
        for (; i < count; i++)
            destination[i] = source[i] * scale;
    }
}
