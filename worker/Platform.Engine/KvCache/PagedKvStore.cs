// The device-side KV memory: per layer, one K and one V tensor of shape
// [blocks × blockSize, kvHeads, headDim], preallocated once from the memory
// budget and never part of a dispose scope. A token's slot is
// block × blockSize + offset; writes scatter by slot, attention gathers a
// sequence's slots in order.
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

    public PagedKvStore(int numLayers, int numBlocks, int blockSize, int kvHeads, int headDim, ScalarType dtype)
    {
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        BytesPerBlock = BytesPerBlockFor(numLayers, blockSize, kvHeads, headDim, dtype);
        _elementsPerSlot = kvHeads * headDim;
        _keys = new Tensor[numLayers];
        _values = new Tensor[numLayers];
        for (int l = 0; l < numLayers; l++)
        {
            _keys[l] = torch.zeros([(long)numBlocks * blockSize, kvHeads, headDim], dtype).DetachFromDisposeScope();
            _values[l] = torch.zeros([(long)numBlocks * blockSize, kvHeads, headDim], dtype).DetachFromDisposeScope();
        }
    }

    public static long BytesPerBlockFor(int numLayers, int blockSize, int kvHeads, int headDim, ScalarType dtype) =>
        2L * numLayers * blockSize * kvHeads * headDim * Model.TorchDtypes.ElementSize(dtype);

    /// <summary>Writes k and v ([tokens, kvHeads, headDim]) into the given slots.</summary>
    public void Write(int layer, Tensor slots, Tensor k, Tensor v)
    {
        _keys[layer].index_copy_(0, slots, k);
        _values[layer].index_copy_(0, slots, v);
    }

    /// <summary>Raw storage of one layer's K and V pools (float32 only), for the paged decode kernel; taken once, pools never move.</summary>
    public unsafe (IntPtr Keys, IntPtr Values) Pointers(int layer)
    {
        _pointers ??= Enumerable.Range(0, _keys.Length)
            .Select(l => ((IntPtr)Model.TensorPointers.Float32(_keys[l]), (IntPtr)Model.TensorPointers.Float32(_values[l]))).ToArray();
        return _pointers[layer];
    }

    private (IntPtr, IntPtr)[]? _pointers;

    /// <summary>
    /// Copies one block's K and V of every layer into <paramref name="raw"/> (layer after layer, K then V:
    /// the KV tier's raw layout). float32 pools only. A block's slots are contiguous in each pool.
    /// </summary>
    public unsafe void CopyBlockOut(int block, Span<byte> raw)
    {
        int floats = BlockSize * _elementsPerSlot;
        var dest = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(raw);
        for (int l = 0; l < _keys.Length; l++)
        {
            var (k, v) = Pointers(l);
            new ReadOnlySpan<float>((float*)k + (long)block * floats, floats).CopyTo(dest.Slice(2 * l * floats, floats));
            new ReadOnlySpan<float>((float*)v + (long)block * floats, floats).CopyTo(dest.Slice((2 * l + 1) * floats, floats));
        }
    }

    /// <summary>Writes one block's K and V of every layer from the tier's raw layout (the inverse of CopyBlockOut).</summary>
    public unsafe void CopyBlockIn(int block, ReadOnlySpan<byte> raw)
    {
        int floats = BlockSize * _elementsPerSlot;
        var src = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(raw);
        for (int l = 0; l < _keys.Length; l++)
        {
            var (k, v) = Pointers(l);
            src.Slice(2 * l * floats, floats).CopyTo(new Span<float>((float*)k + (long)block * floats, floats));
            src.Slice((2 * l + 1) * floats, floats).CopyTo(new Span<float>((float*)v + (long)block * floats, floats));
        }
    }

    /// <summary>K and V of the given slots, in order ([slots, kvHeads, headDim]).</summary>
    public (Tensor K, Tensor V) Gather(int layer, Tensor slots) =>
        (_keys[layer].index_select(0, slots), _values[layer].index_select(0, slots));

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}
