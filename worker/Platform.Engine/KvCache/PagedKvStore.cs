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

    public int NumBlocks { get; }
    public int BlockSize { get; }
    public long BytesPerBlock { get; }

    public PagedKvStore(int numLayers, int numBlocks, int blockSize, int kvHeads, int headDim, ScalarType dtype)
    {
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        BytesPerBlock = BytesPerBlockFor(numLayers, blockSize, kvHeads, headDim, dtype);
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

    /// <summary>K and V of the given slots, in order ([slots, kvHeads, headDim]).</summary>
    public (Tensor K, Tensor V) Gather(int layer, Tensor slots) =>
        (_keys[layer].index_select(0, slots), _values[layer].index_select(0, slots));

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}
