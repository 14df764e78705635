// Batched-decode matrix products: output[b, n] = bias[n] + sum_k weight[n, k] * input[b, k] for
// 2..64 token rows against a row-major [outFeatures, inFeatures] weight in fp32, bf16 or fp16 (one
// kernel family for every width through Gemv's IRowLoader; the loader also gives every row's byte
// size, so a loader whose rows carry inline scales fits too). Inputs, sums and outputs are fp32.
//
// Why: Gemv (1..16 rows) multiplies each weight vector into one accumulator per token row, so every
// FMA needs its own input load and narrow weights are widened again for every 8 token rows; from
// batch ~8 two cores run out of load and FMA slots long before DRAM runs out of bandwidth. Above
// 16 rows Projection used libtorch's linear, which needs narrow weights widened in memory first.
//
// Design (per pool chunk of whole weight rows, see Gemm.Avx512.cs / Gemm.Avx2.cs for the tiles):
//   1. Pack a tile of R weight rows (R = 6 on AVX-512, 3 on AVX2): widen them to fp32 once into a
//      per-thread 64-byte-aligned buffer, interleaved as [k / lanes][R][lanes] so the micro-kernel
//      reads one sequential stream (R vectors per k step). The R source rows are contiguous, so the
//      pack is a single sequential read of R * RowBytes, with a software prefetch 4 KB ahead.
//      fp32 weights need no widening: a full tile of rows whose length is a whole number of vectors
//      is read in place (the tile kernels take a row stride and a step), R rows of the source at once.
//      The pack was a copy of every weight per call: on an AMD EPYC Zen 4 (`bench kernels`, two runs
//      each) reading in place took 1.15-1.39x less time at batch 8 and 1.06-1.38x at 16 on AVX-512
//      (2816x512, 2048x2048, 2048x5632), 1.12-1.53x and 1.01-1.29x on the AVX2 tiles.
//   2. For each k-block of KBlock weights (the packed tile's block is R x KBlock x 4 bytes, 12 KB on
//      AVX-512, and stays in L1 while every token group reads it), for each group of C = 4 token
//      rows: a register tile of R x C accumulators (24 zmm + 6 weight + 1 input = 31 registers;
//      12 + 3 + 1 = 16 ymm on AVX2) runs over the block; partial accumulators (un-reduced vectors)
//      live in a small per-thread buffer between k-blocks. Per k step: R weight loads from L1,
//      C input loads from L2, R * C FMAs, i.e. 10 loads per 24 FMAs on AVX-512 and 7 per 12 on
//      AVX2. The input panel is copied once per call into a buffer with 64-byte-aligned rows (so no
//      input load splits a cache line; fp16's input scaling is fused into the copy); 64 rows of
//      2048 floats are 512 KB, which stays in the 1 MB L2.
//   3. While computing a tile, the next tile's source rows are prefetched into L2 (two lines per
//      k step, four on AVX-512: an fp32 tile at batch 8 needed more than two to be in L2 in time),
//      so the next pack reads from L2 and DRAM streaming overlaps the FMAs.
//   4. After the last k-block each accumulator is summed across lanes once, the k tail (inFeatures
//      not a multiple of the lane count, packed separately) is added in scalar code, then scale and
//      bias; only real rows and token rows are stored (tails of both are padded by repeating the
//      last row, whose duplicate results are computed and dropped).
// The weights are thus streamed from memory once per call and widened once per call; each
// widened weight feeds every token row from L1.
//
// Crossover: calls with fewer rows than GemvRowsLimitF32 (fp32 weights: 8) or GemvRowsLimitNarrow
// (bf16/fp16: 8; int8: GemvRowsLimitQ8, 16, whose GEMV runs integer dots) go to Gemv's tiles. From bench
// `kernels` (TinyLlama shapes, 2 threads, AVX-512, quiet machine, 2026-12-04, after the pack lost its
// per-8-weights integer division): at batch 2 Gemv was as fast or faster everywhere (the GEMM's 4-row
// group computes padding rows), at batch 4 the two were within ~10 % either way, and from batch 8 the
// GEMM won every shape and width (bf16 8: 1.3-1.5x, 12: 1.5-1.7x; fp32 8: 1.0-1.3x).
// (Before that fix the pack cost ~1.5 cycles per weight and bf16 needed 16 rows to win.)
// fp16 uses the same w * 2^-112 decode and 2^56 input and
// output scaling as Gemv (see Gemv.Avx2.cs), so fp16 weights must be finite (Gemv.AllFinite).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Platform.Engine.Kernels.Gemv;

namespace Platform.Engine.Kernels;

public static unsafe partial class Gemm
{
    /// <summary>fp32 calls with fewer token rows than this go to <see cref="Gemv"/> (see header); 0 sends every call to the GEMM tiles.</summary>
    internal static int GemvRowsLimitF32 { get; set; } = 8;

    /// <summary>bf16 and fp16 calls with fewer token rows than this go to <see cref="Gemv"/> (see header); 0 sends every call to the GEMM tiles.</summary>
    internal static int GemvRowsLimitNarrow { get; set; } = 8;

    /// <summary>
    /// int8 calls with fewer token rows than this go to Gemv's integer-dot kernels (which quantize the
    /// activations and run at ~120 GFLOP/s from batch 8 on); 0 sends every call to the GEMM tiles.
    /// </summary>
    internal static int GemvRowsLimitQ8 { get; set; } = 16;

    /// <summary>Weights per k-block of a packed tile (a multiple of 16; see header). Internal so the bench can sweep it.</summary>
    internal static int KBlock { get; set; } = 512;

    /// <summary>Below this many multiply-adds (rows x outFeatures x inFeatures) a call runs on the calling thread only.</summary>
    internal static long ParallelThresholdFmas { get; set; } = 1L << 20;

    /// <summary>Token rows per register tile (both accelerated paths).</summary>
    private const int TokenTile = 4;

    /// <summary>
    /// output[b, n] = bias[n] + sum_k weight[n, k] * input[b, k] for b &lt; rows with fp32 weights. weight is
    /// row-major [outFeatures, inFeatures]; input is [rows, inFeatures]; output is [rows, outFeatures] (all
    /// contiguous; output must not overlap the others); bias is [outFeatures] or null. Meant for 2..64 rows;
    /// any count is correct. Uses up to <see cref="KernelThreads.Count"/> threads; call from one thread at a time.
    /// </summary>
    public static void MultiplyF32(float* weight, int outFeatures, int inFeatures, float* input, int rows, float* output, float* bias = null)
    {
        if (rows < GemvRowsLimitF32)
        {
            MatVecF32(weight, outFeatures, inFeatures, input, rows, output, bias);
            return;
        }
        Run<F32Loader>(weight, outFeatures, inFeatures, input, rows, output, bias, 1f, 1f);
    }

    /// <summary>As <see cref="MultiplyF32"/> with bf16 weights (raw 16-bit patterns), widened exactly; fp32 products and sums.</summary>
    public static void MultiplyBF16(ushort* weight, int outFeatures, int inFeatures, float* input, int rows, float* output, float* bias = null)
    {
        if (rows < GemvRowsLimitNarrow)
        {
            MatVecBF16(weight, outFeatures, inFeatures, input, rows, output, bias);
            return;
        }
        Run<BF16Loader>(weight, outFeatures, inFeatures, input, rows, output, bias, 1f, 1f);
    }

    /// <summary>
    /// As <see cref="MultiplyF32"/> with IEEE fp16 weights, which must be finite (check once with
    /// <see cref="Gemv.AllFinite"/>); inputs must stay below 2^72 in magnitude (see Gemv.MatVecF16).
    /// </summary>
    public static void MultiplyF16(Half* weight, int outFeatures, int inFeatures, float* input, int rows, float* output, float* bias = null)
    {
        if (rows < GemvRowsLimitNarrow)
        {
            MatVecF16(weight, outFeatures, inFeatures, input, rows, output, bias);
            return;
        }
        // The loader decodes w * 2^-112 on every path: inputs pre-scaled by 2^56 (in the panel copy), sums by 2^56 (exact).
        Run<F16Loader>(weight, outFeatures, inFeatures, input, rows, output, bias, F16InputScale, F16OutputScale);
    }

    /// <summary>
    /// As <see cref="MultiplyF32"/> with int8 weights in QuantizationQ8 rows (an fp16 scale and 32 values per block;
    /// inFeatures a multiple of 32): the same tiles, each block widened and scaled once per call (Gemv's Q8 loader).
    /// </summary>
    public static void MultiplyQ8(byte* weight, int outFeatures, int inFeatures, float* input, int rows, float* output, float* bias = null)
    {
        if (rows < GemvRowsLimitQ8)
        {
            MatVecQ8(weight, outFeatures, inFeatures, input, rows, output, bias);
            return;
        }
        if (!QuantizationQ8.Supports(inFeatures))
            throw new ArgumentException($"int8 rows need inFeatures a multiple of 32, got {inFeatures}", nameof(inFeatures));
        // The loader decodes q * d * 2^-112 as fp16 weights are (Gemv.Int8.cs): inputs and sums are scaled by 2^56 the same way.
        Run<Q8Loader>(weight, outFeatures, inFeatures, input, rows, output, bias, F16InputScale, F16OutputScale);
    }

    /// <summary>One call's arguments, shared with the pool threads by pointer.</summary>
    private struct Job
    {
        public byte* Weight;
        public int OutFeatures;
        public int InFeatures;
        /// <summary>The token rows' input panel: a 64-byte-aligned copy, rows <see cref="InputStride"/> floats apart.</summary>
        public float* Input;
        public long InputStride;
        public int Rows;
        public float* Output;
        public float* Bias;
        public float Scale;
        public int RowsPerChunk;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TL>(void* weight, int outFeatures, int inFeatures, float* input, int rows, float* output, float* bias, float inputScale, float outputScale)
        where TL : struct, IRowLoader
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        // The input panel is copied (and for fp16 scaled) into an aligned buffer with 64-byte-aligned
        // rows: the tiles' input loads never split a cache line (decode buffers are managed arrays).
        long stride = ((long)inFeatures + 15) & ~15L;
        float[] panelArray = PanelBuffer(stride * rows + 16);
        fixed (float* panelStart = panelArray)
        {
            float* panel = (float*)(((nint)panelStart + 63) & ~(nint)63);
            for (int r = 0; r < rows; r++)
                ScaleInto(input + (long)r * inFeatures, panel + r * stride, inFeatures, inputScale);
            var job = new Job
            {
                Weight = (byte*)weight,
                OutFeatures = outFeatures,
                InFeatures = inFeatures,
                Input = panel,
                InputStride = stride,
                Rows = rows,
                Output = output,
                Bias = bias,
                Scale = outputScale,
            };
            Dispatch<TL>(&job);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dispatch<TL>(Job* job) where TL : struct, IRowLoader
    {
        int outFeatures = job->OutFeatures, inFeatures = job->InFeatures, rows = job->Rows;
        GemvPath path = ActivePath;
        int tileRows = path switch
        {
            GemvPath.Vector512 => WeightTile512,
            GemvPath.Vector256 => WeightTile256,
            _ => 1,
        };
        delegate*<void*, int, void> body = path switch
        {
            GemvPath.Vector512 => &ChunkAvx512<TL>,
            GemvPath.Vector256 => &ChunkAvx2<TL>,
            _ => &ChunkPortable<TL>,
        };

        long rowBytes = TL.RowBytes(inFeatures);
        int threads = KernelThreads.Count;
        if (threads <= 1 || (long)rows * outFeatures * inFeatures < ParallelThresholdFmas)
        {
            job->RowsPerChunk = outFeatures;
            body(job, 0);
            return;
        }
        // Chunks of ~Gemv.ChunkBytes of weights, at least 4 per thread, a whole number of weight tiles.
        long chunkRows = Math.Max(1, ChunkBytes / rowBytes);
        chunkRows = Math.Min(chunkRows, (outFeatures + 4L * threads - 1) / (4L * threads));
        chunkRows = (chunkRows + tileRows - 1) / tileRows * tileRows;
        job->RowsPerChunk = (int)Math.Min(chunkRows, outFeatures);
        int chunks = (outFeatures + job->RowsPerChunk - 1) / job->RowsPerChunk;
        KernelPool.Run(body, job, chunks, threads);
    }

    private static void RowRange(Job* job, int chunk, out int start, out int end)
    {
        start = chunk * job->RowsPerChunk;
        end = Math.Min(job->OutFeatures, start + job->RowsPerChunk);
    }

    /// <summary>
    /// Widens rows [first, first + tileRows) (indices past <paramref name="lastRow"/> repeat it) into
    /// <paramref name="packed"/>: [k / lanes][tileRows][lanes] for k below the last whole vector, then the
    /// tail as [tileRows][inFeatures % lanes]. Returns the number of whole k steps.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int PackTile<TL>(Job* job, int first, int lastRow, int tileRows, int lanes, float* packed)
        where TL : struct, IRowLoader
    {
        int k = job->InFeatures;
        int steps = k / lanes;
        int vectorEnd = steps * lanes;
        int tail = k - vectorEnd;
        long rowBytes = TL.RowBytes(k);
        // Prefetch distance in source bytes per 8 weights (approximate is fine for a prefetch).
        long bytesPer8 = Math.Max(1, rowBytes * 8 / k);
        float* tailOut = packed + (long)vectorEnd * tileRows;
        // The destination advances by whole k steps (no division by the lane count, which is not a
        // JIT-time constant here: an idiv per 8 weights once cost more than the widening itself).
        long stepFloats = (long)tileRows * lanes;
        for (int r = 0; r < tileRows; r++)
        {
            byte* row = job->Weight + Math.Min(first + r, lastRow) * rowBytes;
            float* destination = packed + r * lanes;
            byte* prefetch = row;
            if (lanes == 16)
            {
                for (int i = 0; i < vectorEnd; i += 16, destination += stepFloats)
                {
                    Prefetch(prefetch);
                    prefetch += 2 * bytesPer8;
                    TL.Load512(row, i).StoreAligned(destination);
                }
            }
            else
            {
                for (int i = 0; i < vectorEnd; i += lanes, destination += stepFloats)
                {
                    for (int h = 0; h < lanes; h += 8)
                    {
                        Prefetch(prefetch);
                        prefetch += bytesPer8;
                        TL.Load(row, i + h).Store(destination + h);
                    }
                }
            }
            for (int j = 0; j < tail; j++)
                tailOut[r * tail + j] = TL.LoadScalar(row, vectorEnd + j);
        }
        return steps;
    }

    /// <summary>
    /// The chunk driver shared by both accelerated paths (see header): pack a tile of
    /// <paramref name="tileRows"/> weight rows, run <paramref name="tile"/> over every k-block and token
    /// group, reduce and store. <paramref name="lanes"/> is the vector width of the tile kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkTiles<TL>(Job* job, int chunk, int tileRows, int lanes,
        delegate*<float*, long, long, float*, float*, float*, float*, int, float*, bool, byte*, byte*, byte*> tile)
        where TL : struct, IRowLoader
    {
        RowRange(job, chunk, out int start, out int end);
        int k = job->InFeatures;
        int rows = job->Rows;
        int groups = (rows + TokenTile - 1) / TokenTile;
        int groupFloats = tileRows * TokenTile * lanes;
        long packedFloats = ((long)tileRows * k + 15) & ~15L;
        float* packed = Scratch(packedFloats + (long)groups * groupFloats);
        float* accumulators = packed + packedFloats;
        long rowBytes = TL.RowBytes(k);
        int blockSteps = Math.Max(1, KBlock / lanes);
        float* x0, x1, x2, x3;
        for (int first = start; first < end; first += tileRows)
        {
            // fp32 rows of whole vectors in a full tile are read in place (see the header, step 1); others are packed.
            bool direct = typeof(TL) == typeof(F32Loader) && k % lanes == 0 && first + tileRows <= end;
            int steps = direct ? k / lanes : PackTile<TL>(job, first, end - 1, tileRows, lanes, packed);
            float* weights = direct ? (float*)(job->Weight + first * rowBytes) : packed;
            long rowStride = direct ? k : lanes, stepFloats = direct ? lanes : (long)tileRows * lanes;
            int vectorEnd = steps * lanes;
            int tail = k - vectorEnd;
            byte* prefetch = job->Weight + Math.Min(first + tileRows, end) * rowBytes;
            byte* prefetchEnd = job->Weight + Math.Min(first + 2 * tileRows, end) * rowBytes;
            int blocks = Math.Max(1, (steps + blockSteps - 1) / blockSteps);
            // The next tile's prefetches are spread evenly over this tile's calls (a share of whole lines per call):
            // issued as fast as the kernels can (4 lines per k step) they came in one burst over the first calls, more
            // misses than the core tracks at once.
            long share = ((prefetchEnd - prefetch + (long)blocks * groups - 1) / ((long)blocks * groups) + 63) & ~63L;
            for (int block = 0; block < blocks; block++)
            {
                int s0 = block * blockSteps;
                int count = Math.Min(blockSteps, steps - s0);
                float* w = weights + s0 * stepFloats;
                for (int g = 0; g < groups; g++)
                {
                    int t0 = g * TokenTile;
                    float* x = job->Input + s0 * lanes;
                    long stride = job->InputStride;
                    x0 = x + t0 * stride;
                    x1 = x + Math.Min(t0 + 1, rows - 1) * stride;
                    x2 = x + Math.Min(t0 + 2, rows - 1) * stride;
                    x3 = x + Math.Min(t0 + 3, rows - 1) * stride;
                    byte* callEnd = prefetchEnd - prefetch > share ? prefetch + share : prefetchEnd;
                    prefetch = tile(w, rowStride, stepFloats, x0, x1, x2, x3, count, accumulators + (long)g * groupFloats, block > 0, prefetch, callEnd);
                }
            }

            float* tailWeights = packed + (long)vectorEnd * tileRows;
            int realRows = Math.Min(tileRows, end - first);
            for (int g = 0; g < groups; g++)
            {
                float* acc = accumulators + (long)g * groupFloats;
                int t0 = g * TokenTile;
                int realTokens = Math.Min(TokenTile, rows - t0);
                for (int r = 0; r < realRows; r++)
                {
                    for (int j = 0; j < realTokens; j++)
                    {
                        float* lanesAt = acc + (r * TokenTile + j) * lanes;
                        float sum = lanes == 16 ? Vector512.Sum(Vector512.LoadAligned(lanesAt)) : Vector256.Sum(Vector256.LoadAligned(lanesAt));
                        StoreResult(job, first + r, t0 + j, sum, tailWeights + r * tail, tail, vectorEnd);
                    }
                }
            }
        }
    }

    /// <summary>Adds the packed k tail to one (weight row, token row) sum, then scales, adds the bias and stores it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreResult(Job* job, int row, int token, float sum, float* tailWeights, int tail, int vectorEnd)
    {
        float* x = job->Input + token * job->InputStride + vectorEnd;
        for (int j = 0; j < tail; j++)
            sum += tailWeights[j] * x[j];
        float value = sum * job->Scale;
        if (job->Bias != null)
            value += job->Bias[row];
        job->Output[(long)token * job->OutFeatures + row] = value;
    }

    /// <summary>Per-thread scratch: the packed weight tile and the partial accumulators, 64-byte aligned.</summary>
    [ThreadStatic]
    private static float[]? _scratch;

    /// <summary>The calling thread's input panel (separate from <see cref="_scratch"/>, which the caller also uses for its chunks).</summary>
    [ThreadStatic]
    private static float[]? _panel;

    private static float[] PanelBuffer(long floats)
    {
        float[]? buffer = _panel;
        if (buffer is null || buffer.LongLength < floats)
        {
            buffer = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(floats, 64 * 1024)), pinned: true);
            _panel = buffer;
        }
        return buffer;
    }

    /// <summary>A pinned per-thread buffer of at least <paramref name="floats"/> floats; the returned pointer is 64-byte aligned.</summary>
    private static float* Scratch(long floats)
    {
        float[]? buffer = _scratch;
        if (buffer is null || buffer.LongLength < floats + 16)
        {
            buffer = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(floats + 16, 64 * 1024)), pinned: true);
            _scratch = buffer;
        }
        // Pinned arrays never move, so the address stays valid after fixed ends.
        fixed (float* start = buffer)
            return (float*)(((nint)start + 63) & ~(nint)63);
    }

    /// <summary>Prefetches the next tile's source rows into L2 (two lines per call) until the cursor reaches the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* PrefetchNext(byte* cursor, byte* end)
    {
        if (cursor < end)
        {
            Sse.Prefetch1(cursor);
            Sse.Prefetch1(cursor + 64);
            cursor += 128;
        }
        return cursor;
    }
}
