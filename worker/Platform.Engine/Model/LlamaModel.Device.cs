// The device-generic forward pass: the same model as LlamaModel.cs, written only
// in libtorch ops so that it runs wherever the weights are (cpu, cuda, or
// libtorch's data-less `meta` device in the tests). It never reads a tensor's
// host memory: no raw pointers, no data<T>(), no item(). One step copies its
// integer inputs (token ids, positions, KV slots, gather indices, lengths) to
// the device in a single transfer (StepIndices), then every layer runs on the
// device:
// - linear layers through libtorch (Projection.ForwardLibtorch), never our GEMV;
// - RoPE cos/sin from the positions on the device (float64 angles, as on cpu);
// - K/V scattered into the paged pools by slot (index_copy_), rows picked by
//   advanced indexing (aten::index.Tensor: libtorch 2.10 has no meta kernel
//   for index_select, which the cpu path uses; nor for logical_and/logical_not,
//   so masks are built by successive masked_fill_ of comparisons; nor for
//   aten::where, which scaled_dot_product_attention's math fallback calls, so
//   on meta only the attention is written out over the same inputs);
// - decode sequences (one new token each) attend together: their visible slots
//   are padded to the longest into one [B, S] gather, padding is masked, and one
//   batched scaled_dot_product_attention call covers them all;
// - prefill chunks gather their visible slots and attend with a causal (and
//   sliding-window) mask built on the device from the positions.
// The logits stay on the device; LlmEngine.Device.cs samples greedy rows there.
// On cpu this path is the baseline the native kernels are measured against
// (bench engine --path generic), and it is held to the float64 reference.
using Platform.Core.Models;
using Platform.Engine.KvCache;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

/// <summary>Which forward pass runs (see LlamaModel.Device.cs).</summary>
public enum ForwardPath
{
    /// <summary>On cpu: our GEMV, the native decode step and the paged kernel where they apply (DecodePath).</summary>
    Native,
    /// <summary>libtorch ops only, on whatever device holds the weights; always used off cpu.</summary>
    Generic,
}

public sealed partial class LlamaModel
{
    private Tensor? _invFreqOnDevice;

    /// <summary>The device the weights live on (cpu, cuda:N, or meta in tests).</summary>
    public Device Device => _weights.Embedding.device;

    /// <summary>Generic forces the libtorch-only path on cpu (benchmarks, tests); off cpu it always runs.</summary>
    public ForwardPath ForwardPath { get; set; } = ForwardPath.Native;

    /// <summary>True when Forward runs the device-generic path (any device but cpu, or ForwardPath.Generic).</summary>
    public bool RunsGenericPath => ForwardPath == ForwardPath.Generic || _weights.Embedding.device_type != DeviceType.CPU;

    /// <summary>The weight dtype to load for <paramref name="device"/>: off cpu, auto means the compute dtype (no GEMV widens narrow weights there).</summary>
    private static string WeightDtypeFor(string weightDtype, ScalarType compute, Device? device) =>
        device is not null && device.type != DeviceType.CPU && weightDtype.Equals(WeightDtype.Auto, StringComparison.OrdinalIgnoreCase)
            ? Torch.TorchDtypes.Name(compute)
            : weightDtype;

    private Tensor ForwardGeneric(ForwardBatch batch, PagedKvStore kv)
    {
        var c = Config;
        var device = Device;
        int t = batch.NumTokens;
        int qSize = c.NumHeads * c.HeadDim, kvSize = c.NumKvHeads * c.HeadDim;
        var step = StepIndices.For(batch, c);
        var packed = torch.tensor(step.Values, torch.int64, device);   // the step's one host → device copy
        Tensor Section((int Start, int Length) range) => packed.narrow(0, range.Start, range.Length);

        var ids = Section(step.Ids);
        var positions = Section(step.Positions);
        var slots = Section(step.Slots);
        var (cos, sin) = RotaryTablesOn(positions);
        var decodeRows = step.DecodeCount > 0 ? Section(step.DecodeRows) : null;
        var decodeGathers = new Dictionary<AttentionWindow, (Tensor Slots, Tensor Mask)>();
        var prefillMasks = new Dictionary<(int Sequence, AttentionWindow Window), Tensor>();

        var embedded = Rows(_weights.Embedding, ids);
        var x = embedded.dtype == Dtype ? embedded : embedded.to_type(Dtype);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var w = _weights.Layers[l];
            var h = RmsNorm(x, w.InputNorm);
            var qkv = w.Qkv.ForwardLibtorch(h);
            var q = qkv.narrow(1, 0, qSize).view(t, c.NumHeads, c.HeadDim);
            var k = qkv.narrow(1, qSize, kvSize).view(t, c.NumKvHeads, c.HeadDim);
            var v = qkv.narrow(1, qSize + kvSize, kvSize).view(t, c.NumKvHeads, c.HeadDim);
            q = ApplyRotary(q, cos, sin);
            k = ApplyRotary(k, cos, sin);
            kv.Write(l, slots, k, v.contiguous());

            var window = c.WindowOf(l);
            var attention = torch.empty([t, qSize], Dtype, device);
            if (decodeRows is not null)
            {
                if (!decodeGathers.TryGetValue(window, out var gather))
                    decodeGathers[window] = gather = DecodeGather(step, window, Section);
                attention.index_copy_(0, decodeRows, AttendDecodes(Rows(q, decodeRows), kv, l, gather.Slots, gather.Mask));
            }
            for (int s = 0; s < batch.Sequences.Count; s++)
            {
                var seq = batch.Sequences[s];
                if (seq.NumTokens == 1) continue;
                if (!prefillMasks.TryGetValue((s, window), out var mask))
                    prefillMasks[(s, window)] = mask = PrefillMask(seq, positions.narrow(0, seq.TokenStart, seq.NumTokens), window, device);
                var (keys, values) = kv.GatherRows(l, Section(step.PrefillSlots[(s, window)]));
                attention.narrow(0, seq.TokenStart, seq.NumTokens).copy_(AttendChunk(q.narrow(0, seq.TokenStart, seq.NumTokens), keys, values, mask));
            }
            x = x + w.O.ForwardLibtorch(attention);
            var gateUp = w.GateUp.ForwardLibtorch(RmsNorm(x, w.PostNorm));
            var activated = torch.nn.functional.silu(gateUp.narrow(1, 0, c.IntermediateSize)) * gateUp.narrow(1, c.IntermediateSize, c.IntermediateSize);
            x = x + w.Down.ForwardLibtorch(activated);
        }
        if (batch.LogitRows.Count == 0) return torch.empty([0, c.VocabSize], torch.float32, device);
        var last = RmsNorm(Rows(x, Section(step.LogitRows)), _weights.FinalNorm);
        return _weights.LmHead.ForwardLibtorch(last).to_type(torch.float32);
    }

    /// <summary>
    /// Rows of <paramref name="source"/> picked by <paramref name="indices"/> through advanced indexing (aten::index.Tensor):
    /// index_select would do the same, but libtorch 2.10 registers no meta kernel for it, and this path must run on meta.
    /// </summary>
    private static Tensor Rows(Tensor source, Tensor indices) => source.index(TensorIndex.Tensor(indices));

    /// <summary>cos and sin of the positions (already on the device) × inverse frequency, in float64 as on cpu.</summary>
    private (Tensor Cos, Tensor Sin) RotaryTablesOn(Tensor positions)
    {
        _invFreqOnDevice ??= _invFreq.to(Device).DetachFromDisposeScope();
        var angles = positions.to_type(torch.float64).unsqueeze(1) * _invFreqOnDevice.unsqueeze(0);
        var full = torch.cat([angles, angles], 1);
        var cos = (full.cos() * _ropeScaleScalar).to_type(Dtype).unsqueeze(1);
        var sin = (full.sin() * _ropeScaleScalar).to_type(Dtype).unsqueeze(1);
        return (cos, sin);
    }

    /// <summary>The padded [B·S] slots of the decode sequences in <paramref name="window"/> and their [B, 1, 1, S] padding mask.</summary>
    private (Tensor Slots, Tensor Mask) DecodeGather(StepIndices step, AttentionWindow window, Func<(int, int), Tensor> section)
    {
        var (slotRange, lengthRange, width) = step.DecodeSlots[window];
        using var widthScalar = ((long)width).ToScalar();
        using var zero = 0L.ToScalar();
        using var negativeInfinity = double.NegativeInfinity.ToScalar();
        var lengths = section(lengthRange);
        var columns = torch.arange(zero, widthScalar, torch.int64, lengths.device).unsqueeze(0);
        var padding = columns >= lengths.unsqueeze(1);
        var mask = torch.zeros([step.DecodeCount, width], Dtype, lengths.device).masked_fill(padding, negativeInfinity);
        return (section(slotRange), mask.view(step.DecodeCount, 1, 1, width));
    }

    /// <summary>
    /// Attention of B decode queries [B, heads, d] over their padded keys (one batched SDPA call): GQA folded as in
    /// Attend, the query heads of one KV head along the query axis → [B, heads·d].
    /// </summary>
    private Tensor AttendDecodes(Tensor queries, PagedKvStore kv, int layer, Tensor paddedSlots, Tensor mask)
    {
        var c = Config;
        long b = queries.shape[0];
        long width = paddedSlots.shape[0] / b;
        var (keys, values) = kv.GatherRows(layer, paddedSlots);
        var qf = queries.reshape(b, c.NumKvHeads, c.QueriesPerKvHead, c.HeadDim);
        var kf = keys.view(b, width, c.NumKvHeads, c.HeadDim).permute(0, 2, 1, 3);
        var vf = values.view(b, width, c.NumKvHeads, c.HeadDim).permute(0, 2, 1, 3);
        return ScaledDotProductAttention(qf, kf, vf, mask).reshape(b, c.NumHeads * c.HeadDim);
    }

    /// <summary>Attend's folded-GQA attention of one prefill chunk [L, heads, d] over its keys [S, kvHeads, d] → [L, heads·d].</summary>
    private Tensor AttendChunk(Tensor q, Tensor keys, Tensor values, Tensor mask)
    {
        var c = Config;
        long l = q.shape[0];
        int groups = c.QueriesPerKvHead;
        var qf = q.reshape(l, c.NumKvHeads, groups, c.HeadDim).permute(1, 2, 0, 3).reshape(c.NumKvHeads, groups * l, c.HeadDim);
        var o = ScaledDotProductAttention(qf, keys.permute(1, 0, 2), values.permute(1, 0, 2), mask);
        return o.reshape(c.NumKvHeads, groups, l, c.HeadDim).permute(2, 0, 1, 3).reshape(l, c.NumHeads * c.HeadDim);
    }

    /// <summary>
    /// libtorch's scaled_dot_product_attention (its fused kernels on cuda). On meta it cannot run: its math fallback
    /// calls aten::where, which libtorch 2.10 has no meta kernel for; there the same attention is written out
    /// (softmax(q kᵀ / √d + mask) v) over the very same inputs, so a query, key, value or mask off meta still fails.
    /// </summary>
    private Tensor ScaledDotProductAttention(Tensor q, Tensor k, Tensor v, Tensor mask)
    {
        if (q.device_type != DeviceType.META)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, mask, 0.0, false);
        using var scale = _softmaxScale.ToScalar();
        var scores = torch.matmul(q, k.transpose(-2, -1)) * scale + mask;
        return torch.matmul(scores.softmax(-1), v);
    }

    /// <summary>
    /// The mask of a prefill chunk over the keys StepIndices gathered for it, from the chunk's positions on the
    /// device: each query sees the keys from its window's start to itself; folded-GQA layout as in AttentionMask.
    /// </summary>
    private Tensor PrefillMask(SequenceSlice seq, Tensor queryPositions, AttentionWindow window, Device device)
    {
        long first = window.FirstVisibleKey(seq.ContextLength - seq.NumTokens);
        using var firstScalar = first.ToScalar();
        using var endScalar = ((long)seq.ContextLength).ToScalar();
        using var negativeInfinity = double.NegativeInfinity.ToScalar();
        var queryPos = queryPositions.unsqueeze(1);
        var keyPos = torch.arange(firstScalar, endScalar, torch.int64, device).unsqueeze(0);
        // Future keys, then (sliding) keys below the window, each hidden by its own masked_fill_: libtorch 2.10 has no
        // meta kernel for logical_and / logical_not, so the two conditions are never combined into one boolean tensor.
        var mask = torch.zeros([seq.NumTokens, seq.ContextLength - first], Dtype, device).masked_fill_(keyPos > queryPos, negativeInfinity);
        if (window.Size is { } size)
        {
            using var reach = ((long)size - 1).ToScalar();
            mask.masked_fill_(keyPos < queryPos - reach, negativeInfinity);
        }
        return mask.repeat(Config.QueriesPerKvHead, 1);
    }

    /// <summary>
    /// One step's integer inputs packed into one host array (copied to the device once), with where each part
    /// lies: token ids, positions, KV slots, logit rows; the decode sequences' rows, their visible slots padded to
    /// the longest per window, and their lengths; each prefill chunk's visible slots per window.
    /// </summary>
    private sealed class StepIndices
    {
        private readonly List<long> _values = [];

        public long[] Values => [.. _values];
        public (int Start, int Length) Ids { get; private set; }
        public (int Start, int Length) Positions { get; private set; }
        public (int Start, int Length) Slots { get; private set; }
        public (int Start, int Length) LogitRows { get; private set; }
        public (int Start, int Length) DecodeRows { get; private set; }
        public int DecodeCount { get; private set; }
        public Dictionary<AttentionWindow, ((int Start, int Length) Slots, (int Start, int Length) Lengths, int Width)> DecodeSlots { get; } = [];
        public Dictionary<(int Sequence, AttentionWindow Window), (int Start, int Length)> PrefillSlots { get; } = [];

        private (int, int) Add(IEnumerable<long> values)
        {
            int start = _values.Count;
            _values.AddRange(values);
            return (start, _values.Count - start);
        }

        public static StepIndices For(ForwardBatch batch, ModelConfig c)
        {
            var step = new StepIndices();
            step.Ids = step.Add(batch.InputIds.Select(i => (long)i));
            step.Positions = step.Add(batch.Positions);
            step.Slots = step.Add(batch.Slots);
            step.LogitRows = step.Add(batch.LogitRows.Select(r => (long)r));
            var windows = Enumerable.Range(0, c.NumLayers).Select(c.WindowOf).Distinct().ToList();
            var decodes = batch.Sequences.Where(s => s.NumTokens == 1).ToList();
            step.DecodeCount = decodes.Count;
            step.DecodeRows = step.Add(decodes.Select(s => (long)s.TokenStart));
            foreach (var window in windows)
            {
                if (decodes.Count > 0)
                {
                    // Each decode query sees its context from its window's start; pad with the sequence's own first visible slot (masked).
                    var visible = decodes.Select(s => s.ContextSlots.AsMemory((int)window.FirstVisibleKey(s.ContextLength - 1))).ToList();
                    int width = visible.Max(m => m.Length);
                    var padded = visible.SelectMany(m => m.ToArray().Concat(Enumerable.Repeat(m.Span[0], width - m.Length)));
                    step.DecodeSlots[window] = (step.Add(padded), step.Add(visible.Select(m => (long)m.Length)), width);
                }
                for (int s = 0; s < batch.Sequences.Count; s++)
                {
                    var seq = batch.Sequences[s];
                    if (seq.NumTokens == 1) continue;
                    int first = (int)window.FirstVisibleKey(seq.ContextLength - seq.NumTokens);
                    step.PrefillSlots[(s, window)] = step.Add(seq.ContextSlots.Skip(first));
                }
            }
            return step;
        }
    }

    /// <summary>
    /// Weights moved to <paramref name="device"/> (the tied output head stays the embedding); the cpu copies are
    /// freed. On cpu, or with no device, the weights are returned as they are.
    /// </summary>
    private static LlamaWeights PlaceOn(LlamaWeights weights, Device? device)
    {
        if (device is null || device.type == DeviceType.CPU) return weights;
        Tensor Move(Tensor t)
        {
            var moved = t.to(device).DetachFromDisposeScope();
            return moved;
        }
        Projection MoveProjection(Projection p) => new(Move(p.Weight), p.Bias is null ? null : Move(p.Bias));
        var embedding = Move(weights.Embedding);
        bool tied = ReferenceEquals(weights.LmHead.Weight, weights.Embedding);
        var placed = new LlamaWeights
        {
            Embedding = embedding,
            Layers = weights.Layers.Select(w => new LayerWeights
            {
                InputNorm = Move(w.InputNorm),
                Qkv = MoveProjection(w.Qkv),
                O = MoveProjection(w.O),
                PostNorm = Move(w.PostNorm),
                GateUp = MoveProjection(w.GateUp),
                Down = MoveProjection(w.Down),
            }).ToArray(),
            FinalNorm = Move(weights.FinalNorm),
            LmHead = tied ? new Projection(embedding, null) : MoveProjection(weights.LmHead),
            ParameterBytes = weights.ParameterBytes,
            WeightType = weights.WeightType,
        };
        weights.Dispose();
        return placed;
    }
}
