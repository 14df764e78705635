// The device-side KV memory: per layer, one K and one V tensor of shape
// [blocks × blockSize, kvHeads, headDim], reserved once from the memory
// budget (zero-filled lazily: pages are committed when first written, see
// LazyZeroMemory) and never part of a dispose scope. A token's slot is
// block × blockSize + offset; writes scatter by slot, attention gathers a
// sequence's slots in order.
// Pools hold the compute dtype (float32, bfloat16 or float16): the KV tier
// copies blocks out and in as raw bytes of that type, and DistAttention widens
// rows to float32 only where its float32 kernel reads them.
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.KvCache;

public sealed class PagedKvStore : IDisposable
{
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;
    private readonly int _elementsPerSlot;

    public int NumBlocks { get; }
    public int BlockSize { get; }
    public long BytesPerBlock { get; }

    /// <param name="device">Where the pools live; null is the cpu (lazily zeroed). Off cpu they are torch.zeros on the device.</param>
    public PagedKvStore(int numLayers, int numBlocks, int blockSize, int kvHeads, int headDim, ScalarType dtype, Device? device = null)
    {
        Device = device ?? torch.CPU;
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        Dtype = dtype;
        ElementSize = Torch.TorchDtypes.ElementSize(dtype);
        BytesPerBlock = BytesPerBlockFor(numLayers, blockSize, kvHeads, headDim, dtype);
        _elementsPerSlot = kvHeads * headDim;
        _keys = new Tensor[numLayers];
        _values = new Tensor[numLayers];
        for (int l = 0; l < numLayers; l++)
        {
            _keys[l] = Pool([(long)numBlocks * blockSize, kvHeads, headDim], dtype).DetachFromDisposeScope();
            _values[l] = Pool([(long)numBlocks * blockSize, kvHeads, headDim], dtype).DetachFromDisposeScope();
        }
    }

    private Tensor Pool(long[] shape, ScalarType dtype) =>
        Device.type == DeviceType.CPU ? LazyZeroMemory.Zeros(shape, dtype) : torch.zeros(shape, dtype, Device);

    /// <summary>Where the pools live (cpu unless the engine runs on a device).</summary>
    public Device Device { get; }

    public static long BytesPerBlockFor(int numLayers, int blockSize, int kvHeads, int headDim, ScalarType dtype) =>
        2L * numLayers * blockSize * kvHeads * headDim * Torch.TorchDtypes.ElementSize(dtype);

    /// <summary>Writes k and v ([tokens, kvHeads, headDim]) into the given slots.</summary>
    public void Write(int layer, Tensor slots, Tensor k, Tensor v)
    {
        _keys[layer].index_copy_(0, slots, k);
        _values[layer].index_copy_(0, slots, v);
    }

    /// <summary>Element type of the pools: the engine's compute dtype (float32, bfloat16 or float16).</summary>
    public ScalarType Dtype { get; }

    /// <summary>Bytes of one element of the pools.</summary>
    public int ElementSize { get; }

    /// <summary>
    /// Raw storage of one layer's K and V pools, elements of <see cref="Dtype"/> (the paged decode kernel
    /// casts them to float* and runs only on float32 pools); taken once, pools never move.
    /// </summary>
    public unsafe (IntPtr Keys, IntPtr Values) Pointers(int layer)
    {
        if (Device.type != DeviceType.CPU)
            throw new InvalidOperationException(
                $"the KV pools are on {Device}: the paged kernel, the KV tier and DistAttention read them through host pointers and run only with --device cpu.");
        _pointers ??= Enumerable.Range(0, _keys.Length)
            .Select(l => ((IntPtr)Torch.TensorPointers.Data(_keys[l]), (IntPtr)Torch.TensorPointers.Data(_values[l]))).ToArray();
        return _pointers[layer];
    }

    private (IntPtr, IntPtr)[]? _pointers;

    /// <summary>
    /// Copies one block's K and V of every layer into <paramref name="raw"/> (layer after layer, K then V:
    /// the KV tier's raw layout, in the pools' own element type, so no conversion). A block's slots are
    /// contiguous in each pool.
    /// </summary>
    public unsafe void CopyBlockOut(int block, Span<byte> raw)
    {
        int bytes = BlockSize * _elementsPerSlot * ElementSize;
        if (raw.Length < 2 * _keys.Length * bytes) throw new ArgumentException($"a raw block needs {2 * _keys.Length * bytes} bytes, got {raw.Length}", nameof(raw));
        for (int l = 0; l < _keys.Length; l++)
        {
            var (k, v) = Pointers(l);
            new ReadOnlySpan<byte>((byte*)k + (long)block * bytes, bytes).CopyTo(raw.Slice(2 * l * bytes, bytes));
            new ReadOnlySpan<byte>((byte*)v + (long)block * bytes, bytes).CopyTo(raw.Slice((2 * l + 1) * bytes, bytes));
        }
    }

    /// <summary>Writes one block's K and V of every layer from the tier's raw layout (the inverse of CopyBlockOut).</summary>
    public unsafe void CopyBlockIn(int block, ReadOnlySpan<byte> raw)
    {
        int bytes = BlockSize * _elementsPerSlot * ElementSize;
        if (raw.Length < 2 * _keys.Length * bytes) throw new ArgumentException($"a raw block needs {2 * _keys.Length * bytes} bytes, got {raw.Length}", nameof(raw));
        for (int l = 0; l < _keys.Length; l++)
        {
            var (k, v) = Pointers(l);
            raw.Slice(2 * l * bytes, bytes).CopyTo(new Span<byte>((byte*)k + (long)block * bytes, bytes));
            raw.Slice((2 * l + 1) * bytes, bytes).CopyTo(new Span<byte>((byte*)v + (long)block * bytes, bytes));
        }
    }

    /// <summary>
    /// Writes float32 rows ([slots, kvHeads × headDim]) of K and V into the given slots, rounded to the
    /// pools' element type (DistAttention: a creditor storing the K/V a debtor computed; the debtor's
    /// values came from the same dtype, so the rounding is exact).
    /// </summary>
    public unsafe void WriteRows(int layer, ReadOnlySpan<long> slots, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int row = _elementsPerSlot;
        if (keys.Length < slots.Length * row || values.Length < slots.Length * row) throw new ArgumentException("keys and values must hold a row per slot");
        if (UsesTensorPath)
        {
            // Pools off the CPU: one upload of the rows and one scatter per pool, rounded to the pools' dtype on the device.
            using var scope = torch.NewDisposeScope();
            long[] shape = [slots.Length, _keys[layer].shape[1], _keys[layer].shape[2]];
            var index = torch.tensor(slots.ToArray()).to(Device);
            Write(layer, index,
                torch.tensor(keys[..(slots.Length * row)].ToArray(), shape).to_type(Dtype).to(Device),
                torch.tensor(values[..(slots.Length * row)].ToArray(), shape).to_type(Dtype).to(Device));
            return;
        }
        var (k, v) = Pointers(layer);
        for (int i = 0; i < slots.Length; i++)
        {
            KvElements.FromFloat(keys.Slice(i * row, row), (byte*)k + slots[i] * row * ElementSize, Dtype);
            KvElements.FromFloat(values.Slice(i * row, row), (byte*)v + slots[i] * row * ElementSize, Dtype);
        }
    }

    /// <summary>
    /// Attention partials (output and log-sum-exp per query and head, see PagedAttention.DecodePartial) of
    /// <paramref name="count"/> float32 queries over the slots named by <paramref name="slots"/>, each query
    /// over <c>slots[offsets[i] .. offsets[i] + lengths[i])</c>. Float32 pools are read in place; bfloat16 and
    /// float16 pools are first widened to float32 for the first <paramref name="slotCount"/> slots (every
    /// query's range must lie inside them), so the math is float32 over exactly the stored values.
    /// </summary>
    public unsafe void PartialAttention(int layer, float* queries, long* slots, int slotCount, int* offsets, int* lengths, int count,
        int heads, int kvHeads, int headDim, float scale, float* output, float* logSumExp)
    {
        if (UsesTensorPath)
        {
            PartialAttentionOnDevice(layer, queries, slots, slotCount, offsets, lengths, count, heads, kvHeads, headDim, scale, output, logSumExp);
            return;
        }
        var (k, v) = Pointers(layer);
        if (Dtype == ScalarType.Float32)
        {
            Kernels.PagedAttention.DecodePartial(queries, (float*)k, (float*)v, slots, offsets, lengths, count, heads, kvHeads, headDim, scale, output, logSumExp);
            return;
        }
        int row = _elementsPerSlot;
        var keyRows = System.Buffers.ArrayPool<float>.Shared.Rent(Math.Max(1, slotCount * row));
        var valueRows = System.Buffers.ArrayPool<float>.Shared.Rent(Math.Max(1, slotCount * row));
        var identity = System.Buffers.ArrayPool<long>.Shared.Rent(Math.Max(1, slotCount));
        try
        {
            for (int i = 0; i < slotCount; i++)
            {
                KvElements.ToFloat((byte*)k + slots[i] * row * ElementSize, keyRows.AsSpan(i * row, row), Dtype);
                KvElements.ToFloat((byte*)v + slots[i] * row * ElementSize, valueRows.AsSpan(i * row, row), Dtype);
                identity[i] = i;
            }
            fixed (float* kr = keyRows) fixed (float* vr = valueRows) fixed (long* ids = identity)
                Kernels.PagedAttention.DecodePartial(queries, kr, vr, ids, offsets, lengths, count, heads, kvHeads, headDim, scale, output, logSumExp);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(keyRows);
            System.Buffers.ArrayPool<float>.Shared.Return(valueRows);
            System.Buffers.ArrayPool<long>.Shared.Return(identity);
        }
    }

    public int NumLayers => _keys.Length;

    /// <summary>The device the pools live on.</summary>
    public DeviceType PoolDevice => _keys[0].device_type;

    /// <summary>One layer's K and V pool tensors, for batched tier transfers (KvTierTransfer).</summary>
    internal Tensor KeyPool(int layer) => _keys[layer];
    internal Tensor ValuePool(int layer) => _values[layer];

    /// <summary>K and V of the given slots, in order ([slots, kvHeads, headDim]).</summary>
    public (Tensor K, Tensor V) Gather(int layer, Tensor slots) =>
        (_keys[layer].index_select(0, slots), _values[layer].index_select(0, slots));

    /// <summary>
    /// Gather through advanced indexing (aten::index.Tensor) instead of index_select: the same rows, on any device,
    /// meta included (libtorch 2.10 has no meta kernel for index_select); the device-generic path uses it.
    /// </summary>
    public (Tensor K, Tensor V) GatherRows(int layer, Tensor slots) =>
        (_keys[layer].index(TensorIndex.Tensor(slots)), _values[layer].index(TensorIndex.Tensor(slots)));

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }

    /// <summary>Runs <see cref="WriteRows"/> and <see cref="PartialAttention"/> with libtorch ops on CPU pools too (tests).</summary>
    internal static bool ForceTensorPath { get; set; }

    private bool UsesTensorPath => Device.type != DeviceType.CPU || ForceTensorPath;

    /// <summary>
    /// <see cref="PartialAttention"/> where the pools are: the slots' K/V are gathered and widened to float32 on the
    /// device, the scores of every query head over them are masked to each query's range, and only the outputs and
    /// log-sum-exps (a few KB) cross to the host. Same contract as the kernel: an empty range gives output 0, LSE −∞.
    /// </summary>
    private unsafe void PartialAttentionOnDevice(int layer, float* queries, long* slots, int slotCount, int* offsets, int* lengths, int count,
        int heads, int kvHeads, int headDim, float scale, float* output, float* logSumExp)
    {
        using var scope = torch.NewDisposeScope();
        int group = heads / kvHeads;
        var index = torch.tensor(new ReadOnlySpan<long>(slots, slotCount).ToArray()).to(Device);
        // [kvHeads, slots, headDim] → one copy per query head of its group: [heads, slots, headDim].
        var k = _keys[layer].index_select(0, index).to_type(ScalarType.Float32).permute(1, 0, 2).repeat_interleave(group, 0);
        var v = _values[layer].index_select(0, index).to_type(ScalarType.Float32).permute(1, 0, 2).repeat_interleave(group, 0);
        var q = torch.tensor(new ReadOnlySpan<float>(queries, count * heads * headDim).ToArray(), [count, heads, headDim]).to(Device).permute(1, 0, 2);
        var visible = new bool[count * slotCount];
        var empty = new bool[count];
        for (int i = 0; i < count; i++)
        {
            Array.Fill(visible, true, i * slotCount + offsets[i], lengths[i]);
            empty[i] = lengths[i] == 0;
        }
        var hidden = torch.tensor(visible, [1, count, slotCount]).to(Device).logical_not();
        var scores = torch.matmul(q, k.transpose(1, 2)).mul_(scale).masked_fill_(hidden, float.NegativeInfinity); // [heads, count, slots]
        var lse = scores.logsumexp(-1, keepdim: true);                                                              // [heads, count, 1]
        var emptyRows = torch.tensor(empty, [1, count, 1]).to(Device);
        var weights = (scores - lse).exp_().masked_fill_(emptyRows, 0);
        var result = torch.matmul(weights, v).permute(1, 0, 2).contiguous().cpu();                                   // [count, heads, headDim]
        var sums = lse.squeeze(-1).transpose(0, 1).contiguous().cpu();                                             // [count, heads]
        new ReadOnlySpan<float>(Torch.TensorPointers.Float32(result), count * heads * headDim).CopyTo(new Span<float>(output, count * heads * headDim));
        new ReadOnlySpan<float>(Torch.TensorPointers.Float32(sums), count * heads).CopyTo(new Span<float>(logSumExp, count * heads));
    }
}
