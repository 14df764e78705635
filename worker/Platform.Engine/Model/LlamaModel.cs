// The Llama-family forward pass (llama, mistral, qwen2) over a paged KV cache:
// RMSNorm, rotary embeddings with the configured scaling, grouped-query
// attention, SwiGLU MLP and the output head. Linear layers run on the whole
// flattened batch at once; attention runs per sequence over the KV gathered
// from its slots, with a causal mask offset by what was computed before. In a
// layer with a sliding window (ModelConfig.WindowOf) only the keys some query
// of the chunk can see are gathered and the mask also hides those below each
// query's window; decode sequences give the paged kernel only their window's
// slots. GQA is
// folded (query heads grouped under their KV head) because TorchSharp's
// scaled_dot_product_attention has no GQA flag. With float32 pools on the CPU,
// prefill chunks skip the gather and the mask: Kernels/FlashAttention reads the
// pools in place (PrefillAttention selects the path). Callers own the dispose scope.
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine.Kernels;
using Platform.Engine.KvCache;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public sealed partial class LlamaModel : IDisposable
{
    private readonly LlamaWeights _weights;
    private readonly Tensor _invFreq;     // float64 [headDim/2]
    private readonly double[] _invFreqHost;
    private readonly double _ropeScale;   // yarn's attention factor on cos/sin
    // Scalars the forward pass passes to libtorch, made once and alive as long as the model: TorchSharp's implicit
    // double → Scalar is freed only by its finalizer, which can run while a native call still reads it (see AttentionMask).
    private readonly Scalar _ropeScaleScalar;
    private readonly Scalar _rmsEpsilon;
    private readonly double _softmaxScale;

    public ModelConfig Config { get; }
    public ScalarType Dtype { get; }
    public long ParameterBytes => _weights.ParameterBytes;

    public LlamaModel(ModelConfig config, LlamaWeights weights, ScalarType dtype)
    {
        Config = config;
        _weights = weights;
        Dtype = dtype;
        var rope = RopeFrequencies.Compute(config.HeadDim, config.RopeTheta, config.RopeScaling, config.MaxPositionEmbeddings);
        _invFreq = torch.tensor(rope.InverseFrequencies, torch.float64).DetachFromDisposeScope();
        _invFreqHost = rope.InverseFrequencies;
        _ropeScale = rope.AttentionScale;
        _ropeScaleScalar = _ropeScale.ToScalar();
        _rmsEpsilon = config.RmsNormEps.ToScalar();
        _softmaxScale = 1.0 / Math.Sqrt(config.HeadDim);
    }

    /// <summary>The dtype the projection and embedding matrices are held in (WeightDtype).</summary>
    public ScalarType WeightType => _weights.WeightType;

    /// <summary>How many projections are held as int8 (Quantization.Q8); 0 without quantization.</summary>
    public int Int8Projections => _weights.Int8Projections;

    /// <param name="device">Where the weights go (LlamaModel.Device.cs); null or cpu keeps them on the host.</param>
    public static LlamaModel Load(string modelDirectory, ScalarType dtype, IProgress<double>? progress = null, string weightDtype = WeightDtype.Auto,
        string quantization = Quantization.None, Device? device = null)
    {
        var config = ModelConfig.Load(modelDirectory);
        return Load(config, ModelWeights.Open(modelDirectory), dtype, progress, weightDtype, quantization, device);
    }

    /// <summary>As <see cref="Load(string, ScalarType, IProgress{double}?, string, string, Device?)"/> from a config and
    /// checkpoint files the caller opened (and perhaps started populating); the model owns the files from here on,
    /// and a failed load disposes them.</summary>
    public static LlamaModel Load(ModelConfig config, ModelWeights files, ScalarType dtype, IProgress<double>? progress = null, string weightDtype = WeightDtype.Auto,
        string quantization = Quantization.None, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(files);
        // NativeRuntime's module initializer has set libtorch's environment before any of this code ran.
        var weights = LlamaWeights.Load(files, config, dtype, progress, WeightDtypeFor(weightDtype, dtype, device), quantization);
        return new LlamaModel(config, PlaceOn(weights, device), dtype);
    }

    /// <summary>Runs the batch, writing its K/V into <paramref name="kv"/>; returns float32 logits [LogitRows, vocab].</summary>
    public Tensor Forward(ForwardBatch batch, PagedKvStore kv)
    {
        if (RunsGenericPath) return ForwardGeneric(batch, kv);
        if (CanRunDecodeStep(batch)) return DecodeStep(batch, kv);
        var c = Config;
        int t = batch.NumTokens;
        var ids = torch.tensor(batch.InputIds.ToArray(), torch.int64);
        var slots = torch.tensor(batch.Slots.ToArray(), torch.int64);
        var (cos, sin) = RotaryTables(batch.Positions);
        // Decode sequences (one new token) go through the paged kernel together; the rest gather and use SDPA.
        var decode = DecodePath != DecodePath.TorchGather && Dtype == ScalarType.Float32 ? DecodeSet.From(batch) : null;
        // DecodePath.TorchGather keeps the whole libtorch baseline (its prefill included).
        bool flash = PrefillAttention == PrefillAttentionPath.Flash && DecodePath != DecodePath.TorchGather && Dtype == ScalarType.Float32 && kv.Dtype == ScalarType.Float32
            && FlashAttention.Supports(c.HeadDim) && ids.device_type == DeviceType.CPU;
        // The keys each sequence gathers and its mask, per window in use (full, and the sliding one if some layer has it).
        var gathers = new Dictionary<AttentionWindow, (Tensor? Slots, Tensor? Mask)[]>();
        (Tensor? Slots, Tensor? Mask)[] GatherFor(AttentionWindow window)
        {
            if (gathers.TryGetValue(window, out var found)) return found;
            return gathers[window] = batch.Sequences
                .Select(s => decode is not null && s.NumTokens == 1 ? default((Tensor?, Tensor?)) : (VisibleSlots(s, window), AttentionMask(s, window)))
                .ToArray();
        }

        int qSize = c.NumHeads * c.HeadDim, kvSize = c.NumKvHeads * c.HeadDim;
        var x = _weights.Embed(ids, Dtype);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var w = _weights.Layers[l];
            var h = RmsNorm(x, w.InputNorm);
            var qkv = w.Qkv.Forward(h);
            var q = qkv.narrow(1, 0, qSize).view(t, c.NumHeads, c.HeadDim);
            var k = qkv.narrow(1, qSize, kvSize).view(t, c.NumKvHeads, c.HeadDim);
            var v = qkv.narrow(1, qSize + kvSize, kvSize).view(t, c.NumKvHeads, c.HeadDim);
            q = ApplyRotary(q, cos, sin);
            k = ApplyRotary(k, cos, sin);
            kv.Write(l, slots, k, v.contiguous());

            var window = c.WindowOf(l);
            var attention = torch.empty([t, qSize], Dtype);
            if (decode is not null) DecodeAttention(decode.Within(window), q, kv, l, attention);
            var gather = flash ? null : GatherFor(window);
            for (int s = 0; s < batch.Sequences.Count; s++)
            {
                var seq = batch.Sequences[s];
                if (decode is not null && seq.NumTokens == 1) continue;
                if (flash)
                {
                    FlashPrefill(seq, q, kv, l, window, attention);
                    continue;
                }
                var (keys, values) = kv.Gather(l, gather![s].Slots!);
                attention.narrow(0, seq.TokenStart, seq.NumTokens).copy_(Attend(q.narrow(0, seq.TokenStart, seq.NumTokens), keys, values, gather[s].Mask));
            }
            x = x + w.O.Forward(attention);
            x = x + Mlp(x, w);
        }
        if (batch.LogitRows.Count == 0) return torch.empty([0, c.VocabSize], torch.float32);
        var rows = torch.tensor(batch.LogitRows.ToArray(), torch.int64);
        var last = RmsNorm(x.index_select(0, rows), _weights.FinalNorm);
        return _weights.LmHead.Forward(last).to_type(torch.float32);
    }

    /// <summary>How prefill chunks attend; the libtorch gather path is the device-generic one and the baseline.</summary>
    public PrefillAttentionPath PrefillAttention { get; set; } = PrefillAttentionPath.Flash;

    /// <summary>One prefill chunk's attention with the tiled kernel over the float32 pools, into its rows of <paramref name="attention"/>.</summary>
    private unsafe void FlashPrefill(SequenceSlice seq, Tensor q, PagedKvStore kv, int layer, AttentionWindow window, Tensor attention)
    {
        var c = Config;
        var (keys, values) = kv.Pointers(layer);
        long rowFloats = (long)c.NumHeads * c.HeadDim;
        var queries = q.contiguous();
        fixed (long* slots = seq.ContextSlots)
        {
            FlashAttention.Prefill(TensorPointers.Float32(queries) + seq.TokenStart * rowFloats, (float*)keys, (float*)values, slots,
                seq.NumTokens, seq.ContextLength, c.NumHeads, c.NumKvHeads, c.HeadDim, (float)_softmaxScale, window.Size ?? 0,
                TensorPointers.Float32(attention) + seq.TokenStart * rowFloats);
        }
    }

    /// <summary>Which decode path runs; the slower ones stay as baselines for benchmarks and tests.</summary>
    public DecodePath DecodePath { get; set; } = DecodePath.Native;

    /// <summary>The decode sequences of a batch, flattened for the paged kernel.</summary>
    private sealed class DecodeSet
    {
        private DecodeSet? _sliding;

        public required long[] Rows { get; init; }
        /// <summary>Every decode sequence's context slots, one after another.</summary>
        public required long[] Slots { get; init; }
        /// <summary>Where the slots the kernel reads start, per sequence.</summary>
        public required int[] Offsets { get; init; }
        /// <summary>How many slots the kernel reads, per sequence.</summary>
        public required int[] Lengths { get; init; }

        /// <summary>
        /// The same sequences with each one's slots cut to the keys its query sees in a layer with
        /// <paramref name="window"/>: the last min(length, size) of them (the query is the newest position).
        /// Shares <see cref="Slots"/>; made once per step.
        /// </summary>
        public DecodeSet Within(AttentionWindow window)
        {
            if (window.Size is not { } size || Offsets.Length == 0) return this;
            if (_sliding is not null && _sliding.Window == size) return _sliding;
            var offsets = new int[Offsets.Length];
            var lengths = new int[Lengths.Length];
            for (int i = 0; i < Offsets.Length; i++)
            {
                lengths[i] = Math.Min(Lengths[i], size);
                offsets[i] = Offsets[i] + Lengths[i] - lengths[i];
            }
            return _sliding = new DecodeSet { Rows = Rows, Slots = Slots, Offsets = offsets, Lengths = lengths, Window = size };
        }

        private int Window { get; init; }

        /// <summary>No decode sequences (a step of prefill chunks only).</summary>
        public static DecodeSet Empty { get; } = new() { Rows = [], Slots = [], Offsets = [], Lengths = [] };

        public static DecodeSet? From(ForwardBatch batch)
        {
            var decodes = batch.Sequences.Where(s => s.NumTokens == 1).ToList();
            if (decodes.Count == 0) return null;
            var offsets = new int[decodes.Count];
            var lengths = new int[decodes.Count];
            int total = 0;
            for (int i = 0; i < decodes.Count; i++)
            {
                offsets[i] = total;
                lengths[i] = decodes[i].ContextLength;
                total += lengths[i];
            }
            // One decode sequence reads its own slot array; several are concatenated (every element written).
            long[] slots;
            if (decodes.Count == 1) slots = decodes[0].ContextSlots;
            else
            {
                slots = GC.AllocateUninitializedArray<long>(total);
                for (int i = 0; i < decodes.Count; i++) decodes[i].ContextSlots.CopyTo(slots, offsets[i]);
            }
            return new DecodeSet { Rows = decodes.Select(s => (long)s.TokenStart).ToArray(), Slots = slots, Offsets = offsets, Lengths = lengths };
        }
    }

    private unsafe void DecodeAttention(DecodeSet decode, Tensor q, PagedKvStore kv, int layer, Tensor attention)
    {
        var c = Config;
        var rows = torch.tensor(decode.Rows, torch.int64);
        var queries = q.index_select(0, rows).contiguous();
        var output = torch.empty([decode.Rows.Length, c.NumHeads * c.HeadDim], ScalarType.Float32);
        var (keys, values) = kv.Pointers(layer);
        fixed (long* slots = decode.Slots)
        fixed (int* offsets = decode.Offsets)
        fixed (int* lengths = decode.Lengths)
        {
            Kernels.PagedAttention.Decode(TensorPointers.Float32(queries), (float*)keys, (float*)values, slots, offsets, lengths,
                decode.Rows.Length, c.NumHeads, c.NumKvHeads, c.HeadDim, (float)_softmaxScale, TensorPointers.Float32(output));
        }
        attention.index_copy_(0, rows, output);
    }

    /// <summary>The SwiGLU block of a layer on the residual stream: down(silu(gate) · up) of the post-attention norm.</summary>
    private Tensor Mlp(Tensor x, LayerWeights w)
    {
        var gateUp = w.GateUp.Forward(RmsNorm(x, w.PostNorm));
        var gate = gateUp.narrow(1, 0, Config.IntermediateSize);
        var up = gateUp.narrow(1, Config.IntermediateSize, Config.IntermediateSize);
        return w.Down.Forward(torch.nn.functional.silu(gate) * up);
    }

    private Tensor RmsNorm(Tensor x, Tensor weight)
    {
        var xf = x.to_type(torch.float32);
        var normed = xf * torch.rsqrt(xf.square().mean([-1], keepdim: true) + _rmsEpsilon);
        return normed.to_type(Dtype) * weight;
    }

    /// <summary>cos and sin of position × inverse frequency, computed in float64 so large positions stay exact.</summary>
    private (Tensor Cos, Tensor Sin) RotaryTables(List<long> positions)
    {
        var pos = torch.tensor(positions.ToArray(), torch.float64).unsqueeze(1);
        var angles = pos * _invFreq.unsqueeze(0);
        var full = torch.cat([angles, angles], 1);
        var cos = (full.cos() * _ropeScaleScalar).to_type(Dtype).unsqueeze(1);
        var sin = (full.sin() * _ropeScaleScalar).to_type(Dtype).unsqueeze(1);
        return (cos, sin);
    }

    /// <summary>HF's rotate-half convention: the first and second halves of each head are the pairs.</summary>
    private Tensor ApplyRotary(Tensor x, Tensor cos, Tensor sin)
    {
        int half = Config.HeadDim / 2;
        var x1 = x.narrow(2, 0, half);
        var x2 = x.narrow(2, half, half);
        var rotated = torch.cat([-x2, x1], 2);
        return x * cos + rotated * sin;
    }

    /// <summary>The first key position any query of the chunk sees: the first query's window start.</summary>
    private static int FirstGatheredKey(SequenceSlice seq, AttentionWindow window) =>
        (int)window.FirstVisibleKey(seq.ContextLength - seq.NumTokens);

    /// <summary>KV slots of the keys some query of the chunk sees: the whole context, or from the first query's window start.</summary>
    private static Tensor VisibleSlots(SequenceSlice seq, AttentionWindow window)
    {
        int first = FirstGatheredKey(seq, window);
        return torch.tensor(first == 0 ? seq.ContextSlots : seq.ContextSlots[first..], torch.int64);
    }

    /// <summary>
    /// Mask for a chunk of queries that follows (ContextLength − NumTokens) earlier tokens, over the keys
    /// <see cref="VisibleSlots"/> gathers: each query sees the keys from its window's start (AttentionWindow) to itself.
    /// Null for one query (it sees every gathered key).
    /// </summary>
    private Tensor? AttentionMask(SequenceSlice seq, AttentionWindow window)
    {
        if (seq.NumTokens == 1) return null;
        int offset = seq.ContextLength - seq.NumTokens;
        int firstKey = FirstGatheredKey(seq, window);
        var queryPos = torch.arange(offset, seq.ContextLength, torch.int64).unsqueeze(1);
        var keyPos = torch.arange(firstKey, seq.ContextLength, torch.int64).unsqueeze(0);
        var allowed = keyPos <= queryPos;
        if (!window.IsFull)
        {
            var firstVisible = new long[seq.NumTokens];
            for (int i = 0; i < firstVisible.Length; i++) firstVisible[i] = window.FirstVisibleKey(offset + i);
            allowed = allowed.logical_and(keyPos >= torch.tensor(firstVisible, torch.int64).unsqueeze(1));
        }
        // An explicit Scalar, alive until the call returns: TorchSharp's implicit double → Scalar is freed only by its
        // finalizer, which can run while the native masked_fill still reads it (seen: "toFloat" failing on a freed tag
        // during a long-prompt benchmark).
        using var negativeInfinity = double.NegativeInfinity.ToScalar();
        var mask = torch.zeros([seq.NumTokens, seq.ContextLength - firstKey], Dtype).masked_fill(allowed.logical_not(), negativeInfinity);
        // Folded GQA puts the query heads of one KV head one after another along the query axis.
        return mask.repeat(Config.QueriesPerKvHead, 1);
    }

    /// <summary>Attention of one sequence's queries [L, heads, d] over its keys/values [S, kvHeads, d] → [L, heads·d].</summary>
    private Tensor Attend(Tensor q, Tensor keys, Tensor values, Tensor? mask)
    {
        var c = Config;
        long l = q.shape[0];
        int groups = c.QueriesPerKvHead;
        var qf = q.reshape(l, c.NumKvHeads, groups, c.HeadDim).permute(1, 2, 0, 3).reshape(c.NumKvHeads, groups * l, c.HeadDim);
        var kf = keys.permute(1, 0, 2);
        var vf = values.permute(1, 0, 2);
        var o = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, mask, 0.0, false);
        return o.reshape(c.NumKvHeads, groups, l, c.HeadDim).permute(2, 0, 1, 3).reshape(l, c.NumHeads * c.HeadDim);
    }

    public void Dispose()
    {
        _weights.Dispose();
        _invFreq.Dispose();
        _invFreqOnDevice?.Dispose();
        _ropeScaleScalar.Dispose();
        _rmsEpsilon.Dispose();
    }
}

/// <summary>How prefill (and chunked-prefill) attention runs.</summary>
public enum PrefillAttentionPath
{
    /// <summary>
    /// Kernels/FlashAttention over the paged pools in place, when they are float32 on the CPU, the head size a multiple
    /// of 16 and the decode path not <see cref="DecodePath.TorchGather"/>; else as TorchGather.
    /// </summary>
    Flash,
    /// <summary>Each sequence's context gathered from the pools, a mask built, libtorch's scaled_dot_product_attention.</summary>
    TorchGather,
}
