// The forward pass of a DistAttention step: a chunk of one sequence at
// positions at or after its LocalTokens, whose KV lives on creditors. Per layer
// the chunk's queries attend to the local positions [0, LocalTokens) here (all
// of them precede the chunk, so no mask) through the paged kernel with its
// log-sum-exp, the creditors store the chunk's K/V and return their causal
// partials, and the partials merge exactly (AttentionMerge). Projections, norms
// and the MLP are the same libtorch code as the local path. The creditors get
// their requests before the local part is computed, so the two overlap.
// In a sliding-window layer each query's local partial covers only the local
// positions inside its window (none when the window lies wholly past
// LocalTokens: log-sum-exp −∞, which the merge ignores), the creditors cut
// their parts the same way (KvLender), and a creditor whose positions all lie
// below every query's window is not asked at all.
// With a bfloat16/float16 model, queries and K/V are widened to float32 for the
// wire and the kernel (exact), attention and the merge run in float32 over the
// stored values, and the merged output is rounded back to the compute dtype,
// where the local path's SDPA would also round it.
using Platform.Core.Models;
using Platform.Engine.DistAttention;
using Platform.Engine.KvCache;
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public sealed partial class LlamaModel
{
    /// <summary>
    /// Computes positions [start, start + count) of <paramref name="tokens"/> (all at or after the sequence's
    /// LocalTokens) and returns the float32 logits [1, vocab] of the last one. <paramref name="localSlots"/>
    /// are the KV slots of positions [0, LocalTokens).
    /// </summary>
    public unsafe Tensor ForwardRemote(IReadOnlyList<int> tokens, int start, int count, long[] localSlots, DistSequence remote, PagedKvStore kv)
    {
        if (start < remote.LocalTokens) throw new ArgumentException($"position {start} is local (below {remote.LocalTokens})", nameof(start));
        var c = Config;
        int qSize = c.NumHeads * c.HeadDim, kvSize = c.NumKvHeads * c.HeadDim;
        var positions = new List<long>(count);
        var inputIds = new long[count];
        for (int i = 0; i < count; i++)
        {
            positions.Add(start + i);
            inputIds[i] = tokens[start + i];
        }
        long[] positionArray = [.. positions];
        var device = _weights.Embedding.device;
        var (cos, sin) = RotaryTables(positions);
        if (device.type != DeviceType.CPU)
        {
            cos = cos.to(device);
            sin = sin.to(device);
        }
        var x = _weights.Embedding.index_select(0, torch.tensor(inputIds, torch.int64).to(device));

        var localOut = new float[count * qSize];
        var localLse = new float[count * c.NumHeads];
        var merged = new float[count * qSize];
        // Per window in use: the local slots some query sees, and per query where its visible ones start and how many.
        var localKeys = new Dictionary<AttentionWindow, (long[] Slots, int[] Offsets, int[] Lengths)>();
        (long[] Slots, int[] Offsets, int[] Lengths) LocalKeysFor(AttentionWindow window)
        {
            if (localKeys.TryGetValue(window, out var found)) return found;
            // Queries are in position order, so the first one's window starts lowest.
            int first = (int)Math.Min(window.FirstVisibleKey(start), localSlots.Length);
            var offsets = new int[count];
            var lengths = new int[count];
            for (int i = 0; i < count; i++)
            {
                offsets[i] = (int)Math.Min(window.FirstVisibleKey(start + i), localSlots.Length) - first;
                lengths[i] = localSlots.Length - first - offsets[i];
            }
            return localKeys[window] = (first == 0 ? localSlots : localSlots[first..], offsets, lengths);
        }
        var outputs = new List<float[]>(remote.Segments.Count + 1);
        var logSumExps = new List<float[]>(remote.Segments.Count + 1);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var w = _weights.Layers[l];
            var h = RmsNorm(x, w.InputNorm);
            var qkv = w.Qkv.Forward(h);
            var q = ApplyRotary(qkv.narrow(1, 0, qSize).view(count, c.NumHeads, c.HeadDim), cos, sin);
            var k = ApplyRotary(qkv.narrow(1, qSize, kvSize).view(count, c.NumKvHeads, c.HeadDim), cos, sin);
            var v = qkv.narrow(1, qSize + kvSize, kvSize);
            // Queries, K/V and partials travel and are attended in float32; from bfloat16/float16 the widening is exact.
            if (Dtype != ScalarType.Float32)
            {
                q = q.to_type(ScalarType.Float32);
                k = k.to_type(ScalarType.Float32);
                v = v.to_type(ScalarType.Float32);
            }
            // They cross to the creditors from host memory (one small copy per layer when the model is on a device).
            q = q.cpu().contiguous();
            k = k.cpu().contiguous();
            v = v.cpu().contiguous();

            // The creditors start on their part while this worker computes its own.
            var window = c.WindowOf(l);
            var pending = remote.BeginAttend(l, positionArray,
                new ReadOnlySpan<float>(TensorPointers.Float32(k), count * kvSize), new ReadOnlySpan<float>(TensorPointers.Float32(v), count * kvSize), kvSize,
                positionArray, new ReadOnlySpan<float>(TensorPointers.Float32(q), count * qSize), window.FirstVisibleKey(start));
            var (visible, offsets, lengths) = LocalKeysFor(window);
            fixed (long* slots = visible) fixed (int* off = offsets) fixed (int* len = lengths)
            fixed (float* o = localOut) fixed (float* lse = localLse)
            {
                kv.PartialAttention(l, TensorPointers.Float32(q), slots, visible.Length, off, len, count,
                    c.NumHeads, c.NumKvHeads, c.HeadDim, (float)_softmaxScale, o, lse);
            }
            outputs.Clear();
            logSumExps.Clear();
            outputs.Add(localOut);
            logSumExps.Add(localLse);
            remote.EndAttend(pending, outputs, logSumExps);
            Kernels.AttentionMerge.MergeRows(outputs, logSumExps, count, c.NumHeads, c.HeadDim, merged);

            var attention = torch.tensor(merged, [count, qSize]).to_type(Dtype).to(x.device);
            x = x + w.O.Forward(attention);
            x = x + Mlp(x, w);
        }
        var last = RmsNorm(x.narrow(0, count - 1, 1), _weights.FinalNorm);
        return _weights.LmHead.Forward(last).to_type(torch.float32);
    }
}
