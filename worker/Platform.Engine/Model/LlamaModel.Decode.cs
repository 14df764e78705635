// The small step without libtorch: when a step has few token rows (up to
// Projection.MaxGemvRows: decode rows, short prefill chunks, or both), the whole
// layer stack runs on raw float32 buffers — embedding rows (widened from a narrow
// embedding), RMSNorm, our GEMV/GEMM for every projection (fp32, or bf16/f16
// weights widened in registers), RoPE from cos/sin computed once per step, K/V
// written straight into the paged pools, the paged decode kernel for sequences
// with one new token (over each sequence's last sliding_window slots in a
// sliding-window layer) and the tiled prefill kernel for a chunk of several,
// SwiGLU and the residual adds. A short prompt's first token (the start of a
// one-shot `platform generate`, a chat turn whose prefix is cached) thus costs
// no libtorch op either. A libtorch decode
// step is ~50 small native ops per layer (~1,100 on a 22-layer model), each
// with dispatch and allocation costs that a bandwidth-bound step cannot hide;
// here the step is the weight stream plus a little arithmetic. Buffers are
// reused across steps. Numerics equal the libtorch path (the tests hold both to
// the float64 reference).
using Platform.Core.Models;
using Platform.Engine.Kernels;
using Platform.Engine.KvCache;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

/// <summary>How decode steps run.</summary>
public enum DecodePath
{
    /// <summary>Raw-buffer decode step (small all-decode batches), libtorch with the paged kernel otherwise.</summary>
    Native,
    /// <summary>libtorch layers with the paged attention kernel.</summary>
    TorchPaged,
    /// <summary>libtorch layers, K/V gathered per sequence and scaled_dot_product_attention.</summary>
    TorchGather,
}

public sealed partial class LlamaModel
{
    // Raw pointers of the norm weights and embedding, taken once (weights never move).
    private IntPtr[]? _inputNorms, _postNorms;
    private IntPtr _finalNorm, _embedding;

    private float[] _x = [], _h = [], _qkv = [], _q = [], _attn = [], _tmp = [], _gateUp = [], _act = [], _cos = [], _sin = [];
    // The queries and outputs of a step's decode rows when prefill chunks share the step (the kernel wants them packed).
    private float[] _decodeQueries = [], _decodeOutput = [];

    private bool CanRunDecodeStep(ForwardBatch batch)
    {
        if (DecodePath != DecodePath.Native || Dtype != ScalarType.Float32 || !Projection.UseGemv) return false;
        if (batch.NumTokens == 0 || batch.NumTokens > Projection.MaxGemvRows) return false;
        // Prefill chunks in the step attend with the tiled kernel, as on the libtorch path.
        if (batch.Sequences.Count != batch.NumTokens
            && (PrefillAttention != PrefillAttentionPath.Flash || !FlashAttention.Supports(Config.HeadDim)))
            return false;
        return _weights.LmHead.HasRawWeights;
    }

    private static void Ensure(ref float[] buffer, long size)
    {
        if (buffer.Length < size) buffer = new float[size];
    }

    private unsafe Tensor DecodeStep(ForwardBatch batch, PagedKvStore kv)
    {
        var c = Config;
        int t = batch.NumTokens, hidden = c.HiddenSize, d = c.HeadDim, half = d / 2;
        int qSize = c.NumHeads * d, kvSize = c.NumKvHeads * d, qkvSize = qSize + 2 * kvSize, inter = c.IntermediateSize;
        Ensure(ref _x, (long)t * hidden); Ensure(ref _h, (long)t * hidden); Ensure(ref _qkv, (long)t * qkvSize);
        Ensure(ref _q, (long)t * qSize); Ensure(ref _attn, (long)t * qSize); Ensure(ref _tmp, (long)t * hidden);
        Ensure(ref _gateUp, (long)t * 2 * inter); Ensure(ref _act, (long)t * inter);
        Ensure(ref _cos, (long)t * half); Ensure(ref _sin, (long)t * half);

        // Rotary cos/sin per token, once for all layers (angles in float64, as on the libtorch path).
        for (int r = 0; r < t; r++)
            for (int i = 0; i < half; i++)
            {
                double angle = batch.Positions[r] * _invFreqHost[i];
                _cos[r * half + i] = (float)(Math.Cos(angle) * _ropeScale);
                _sin[r * half + i] = (float)(Math.Sin(angle) * _ropeScale);
            }

        // Sequences with one new token attend through the paged decode kernel, all in one call; prefill chunks (more
        // than one new token) through the tiled prefill kernel, one call each.
        var decode = DecodeSet.From(batch) ?? DecodeSet.Empty;
        bool decodeRowsAreBatchRows = decode.Rows.Length == t;
        int decodeRows = decode.Rows.Length;
        if (!decodeRowsAreBatchRows)
        {
            Ensure(ref _decodeQueries, (long)decodeRows * qSize);
            Ensure(ref _decodeOutput, (long)decodeRows * qSize);
        }
        // The slots the kernel reads in full-attention layers and in sliding-window layers (the same when no layer slides).
        var sliding = c.SlidingWindow is { } size ? decode.Within(AttentionWindow.Sliding(size)) : decode;
        if (_inputNorms is null)
        {
            _postNorms = _weights.Layers.Select(w => (IntPtr)TensorPointers.Float32(w.PostNorm)).ToArray();
            _finalNorm = (IntPtr)TensorPointers.Float32(_weights.FinalNorm);
            _embedding = (IntPtr)TensorPointers.Data(_weights.Embedding);
            _inputNorms = _weights.Layers.Select(w => (IntPtr)TensorPointers.Float32(w.InputNorm)).ToArray();
        }
        fixed (float* x = _x) fixed (float* h = _h) fixed (float* qkv = _qkv) fixed (float* q = _q) fixed (float* attn = _attn)
        fixed (float* tmp = _tmp) fixed (float* gateUp = _gateUp) fixed (float* act = _act) fixed (float* cos = _cos) fixed (float* sin = _sin)
        fixed (long* contextSlots = decode.Slots) fixed (int* fullOffsets = decode.Offsets) fixed (int* fullLengths = decode.Lengths)
        fixed (int* slidingOffsets = sliding.Offsets) fixed (int* slidingLengths = sliding.Lengths)
        fixed (float* decodeQueries = _decodeQueries) fixed (float* decodeOutput = _decodeOutput)
        {
            for (int r = 0; r < t; r++)
                EmbeddingRow(batch.InputIds[r], x + (long)r * hidden, hidden);

            for (int l = 0; l < c.NumLayers; l++)
            {
                var w = _weights.Layers[l];
                RmsNorm(x, (float*)_inputNorms[l], h, t, hidden);
                w.Qkv.Forward(h, t, qkv);
                var (keyPool, valuePool) = kv.Pointers(l);
                for (int r = 0; r < t; r++)
                {
                    float* row = qkv + (long)r * qkvSize;
                    Rotate(row, c.NumHeads, d, cos + r * half, sin + r * half);
                    Rotate(row + qSize, c.NumKvHeads, d, cos + r * half, sin + r * half);
                    long slot = batch.Slots[r];
                    new ReadOnlySpan<float>(row + qSize, kvSize).CopyTo(new Span<float>((float*)keyPool + slot * kvSize, kvSize));
                    new ReadOnlySpan<float>(row + qSize + kvSize, kvSize).CopyTo(new Span<float>((float*)valuePool + slot * kvSize, kvSize));
                    new ReadOnlySpan<float>(row, qSize).CopyTo(new Span<float>(q + (long)r * qSize, qSize));
                }
                var window = c.WindowOf(l);
                bool slides = !window.IsFull;
                if (decodeRows > 0)
                {
                    // When every sequence has one row, in row order, the kernel's rows are the batch rows; otherwise the
                    // decode rows' queries are packed for it and its outputs put back.
                    float* queries = q, outputs = attn;
                    if (!decodeRowsAreBatchRows)
                    {
                        for (int i = 0; i < decodeRows; i++)
                            new ReadOnlySpan<float>(q + decode.Rows[i] * qSize, qSize).CopyTo(new Span<float>(decodeQueries + (long)i * qSize, qSize));
                        queries = decodeQueries;
                        outputs = decodeOutput;
                    }
                    PagedAttention.Decode(queries, (float*)keyPool, (float*)valuePool, contextSlots, slides ? slidingOffsets : fullOffsets,
                        slides ? slidingLengths : fullLengths, decodeRows, c.NumHeads, c.NumKvHeads, d, (float)_softmaxScale, outputs);
                    if (!decodeRowsAreBatchRows)
                        for (int i = 0; i < decodeRows; i++)
                            new ReadOnlySpan<float>(decodeOutput + (long)i * qSize, qSize).CopyTo(new Span<float>(attn + decode.Rows[i] * qSize, qSize));
                }
                foreach (var seq in batch.Sequences)
                {
                    if (seq.NumTokens == 1) continue;
                    fixed (long* chunkSlots = seq.ContextSlots)
                        FlashAttention.Prefill(q + (long)seq.TokenStart * qSize, (float*)keyPool, (float*)valuePool, chunkSlots,
                            seq.NumTokens, seq.ContextLength, c.NumHeads, c.NumKvHeads, d, (float)_softmaxScale, window.Size ?? 0,
                            attn + (long)seq.TokenStart * qSize);
                }
                w.O.Forward(attn, t, tmp);
                Add(x, tmp, (long)t * hidden);

                RmsNorm(x, (float*)_postNorms![l], h, t, hidden);
                w.GateUp.Forward(h, t, gateUp);
                for (int r = 0; r < t; r++)
                {
                    float* g = gateUp + (long)r * 2 * inter, u = g + inter, a = act + (long)r * inter;
                    for (int i = 0; i < inter; i++) a[i] = g[i] / (1f + MathF.Exp(-g[i])) * u[i];
                }
                w.Down.Forward(act, t, tmp);
                Add(x, tmp, (long)t * hidden);
            }

            int n = batch.LogitRows.Count;
            if (n == 0) return torch.empty([0, c.VocabSize], torch.float32); // a prefill chunk that does not end its prompt
            var logits = new float[(long)n * c.VocabSize];
            for (int i = 0; i < n; i++)
                new ReadOnlySpan<float>(x + (long)batch.LogitRows[i] * hidden, hidden).CopyTo(new Span<float>(tmp + (long)i * hidden, hidden));
            RmsNorm(tmp, (float*)_finalNorm, h, n, hidden);
            fixed (float* output = logits) _weights.LmHead.Forward(h, n, output);
            return torch.tensor(logits, [n, c.VocabSize]);
        }
    }

    /// <summary>One embedding row as float32 (a bfloat16/float16 embedding widened, exactly).</summary>
    private unsafe void EmbeddingRow(long id, float* destination, int hidden)
    {
        long offset = id * hidden;
        switch (_weights.Embedding.dtype)
        {
            case ScalarType.BFloat16:
                ushort* bf16 = (ushort*)_embedding + offset;
                for (int i = 0; i < hidden; i++) destination[i] = Gemv.WidenBFloat16(bf16[i]);
                break;
            case ScalarType.Float16:
                Half* f16 = (Half*)_embedding + offset;
                for (int i = 0; i < hidden; i++) destination[i] = (float)f16[i];
                break;
            default:
                new ReadOnlySpan<float>((float*)_embedding + offset, hidden).CopyTo(new Span<float>(destination, hidden));
                break;
        }
    }

    private unsafe void RmsNorm(float* x, float* weight, float* y, int rows, int width)
    {
        float eps = (float)Config.RmsNormEps;
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * width, yr = y + (long)r * width;
            double sum = 0;
            for (int i = 0; i < width; i++) sum += xr[i] * xr[i];
            float scale = 1f / MathF.Sqrt((float)(sum / width) + eps);
            for (int i = 0; i < width; i++) yr[i] = xr[i] * scale * weight[i];
        }
    }

    /// <summary>HF's rotate-half RoPE on <paramref name="heads"/> consecutive heads of one row.</summary>
    private static unsafe void Rotate(float* v, int heads, int d, float* cos, float* sin)
    {
        int half = d / 2;
        for (int hd = 0; hd < heads; hd++)
        {
            float* head = v + hd * d;
            for (int i = 0; i < half; i++)
            {
                float a = head[i], b = head[i + half];
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }

    private static unsafe void Add(float* x, float* y, long n)
    {
        long i = 0;
        int width = System.Numerics.Vector<float>.Count;
        for (; i + width <= n; i += width)
        {
            var sum = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(x + i)
                + System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(y + i);
            System.Runtime.CompilerServices.Unsafe.WriteUnaligned(x + i, sum);
        }
        for (; i < n; i++) x[i] += y[i];
    }
}
