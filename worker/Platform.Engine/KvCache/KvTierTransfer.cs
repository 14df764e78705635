// Moves batches of KV blocks between the device pools (PagedKvStore) and the
// KV tier's host byte buffers, in the tier's raw layout: per block, layer after
// layer, K then V, in the pools' own element type (no conversion).
//
// Two ways, chosen by where the pools live:
// * Direct (pools on the CPU): each block is a memcpy between pool memory and
//   its buffer. Nothing is faster on the CPU: a staging tensor would add a copy.
// * Staged (pools on any other device): the batch's blocks are gathered with
//   one index_select per pool tensor into one contiguous staging tensor
//   [blocks, 2 × layers, block elements], which crosses to the host in one
//   copy (and back: one copy, then one index_copy_ per pool tensor). On cuda
//   the host side of that copy is pinned (Tensor.pin_memory() needs CUDA, so
//   pinning happens only there); on other devices it is pageable.
// ForceStaged runs the staged way on CPU pools too, so tests hold both ways to
// the same bytes on a machine without a GPU.
using Platform.Engine.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.KvCache;

public enum KvTransferPath
{
    /// <summary>A memcpy per block between CPU pool memory and host buffers.</summary>
    Direct,
    /// <summary>One gather into a staging tensor and one device↔host copy per batch, host side pageable.</summary>
    Staged,
    /// <summary>As Staged, with the host side of the copy in pinned memory (cuda pools only).</summary>
    StagedPinned,
}

public sealed class KvTierTransfer
{
    private readonly PagedKvStore _store;
    private readonly int _blockElements;
    private readonly int _blockBytes;

    public KvTierTransfer(PagedKvStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _blockElements = checked((int)(store.BytesPerBlock / store.ElementSize / (2 * store.NumLayers)));
        _blockBytes = (int)store.BytesPerBlock;
    }

    /// <summary>Runs the staged path even when the pools are on the CPU (tests, the bench).</summary>
    internal static bool ForceStaged { get; set; }

    /// <summary>The path this store's transfers take now.</summary>
    public KvTransferPath Path
    {
        get
        {
            var device = _store.PoolDevice;
            if (device == DeviceType.CUDA) return KvTransferPath.StagedPinned;
            return device == DeviceType.CPU && !ForceStaged ? KvTransferPath.Direct : KvTransferPath.Staged;
        }
    }

    /// <summary>Copies <paramref name="blocks"/> out of the pools, block i into <paramref name="destinations"/>[i].</summary>
    public void CopyOut(ReadOnlySpan<int> blocks, IReadOnlyList<byte[]> destinations)
    {
        ArgumentNullException.ThrowIfNull(destinations);
        if (destinations.Count < blocks.Length) throw new ArgumentException($"{blocks.Length} blocks need as many buffers, got {destinations.Count}", nameof(destinations));
        if (blocks.IsEmpty) return;
        var path = Path;
        if (path == KvTransferPath.Direct)
        {
            for (int i = 0; i < blocks.Length; i++) _store.CopyBlockOut(blocks[i], destinations[i]);
            return;
        }
        using var scope = torch.NewDisposeScope();
        var ids = BlockIds(blocks);
        int layers = _store.NumLayers;
        var parts = new Tensor[2 * layers];
        for (int l = 0; l < layers; l++)
        {
            parts[2 * l] = BlockView(_store.KeyPool(l)).index_select(0, ids);
            parts[2 * l + 1] = BlockView(_store.ValuePool(l)).index_select(0, ids);
        }
        // [blocks, 2 × layers, block elements]: each block's bytes are already in the tier's raw layout.
        var staged = torch.stack(parts, 1);
        var host = HostStaging(blocks.Length, path);
        host.copy_(staged);
        var source = HostBytes(host, blocks.Length);
        for (int i = 0; i < blocks.Length; i++)
        {
            if (destinations[i].Length < _blockBytes) throw new ArgumentException($"a raw block needs {_blockBytes} bytes, got {destinations[i].Length}", nameof(destinations));
            source.Slice(i * _blockBytes, _blockBytes).CopyTo(destinations[i]);
        }
    }

    /// <summary>Writes <paramref name="blocks"/> into the pools, block i from <paramref name="sources"/>[i] (the inverse of CopyOut).</summary>
    public void CopyIn(ReadOnlySpan<int> blocks, IReadOnlyList<byte[]> sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Count < blocks.Length) throw new ArgumentException($"{blocks.Length} blocks need as many buffers, got {sources.Count}", nameof(sources));
        if (blocks.IsEmpty) return;
        var path = Path;
        if (path == KvTransferPath.Direct)
        {
            for (int i = 0; i < blocks.Length; i++) _store.CopyBlockIn(blocks[i], sources[i]);
            return;
        }
        using var scope = torch.NewDisposeScope();
        var host = HostStaging(blocks.Length, path);
        var target = HostBytes(host, blocks.Length);
        for (int i = 0; i < blocks.Length; i++)
        {
            if (sources[i].Length < _blockBytes) throw new ArgumentException($"a raw block needs {_blockBytes} bytes, got {sources[i].Length}", nameof(sources));
            sources[i].AsSpan(0, _blockBytes).CopyTo(target.Slice(i * _blockBytes, _blockBytes));
        }
        var ids = BlockIds(blocks);
        var staged = host.to(_store.KeyPool(0).device);
        for (int l = 0; l < _store.NumLayers; l++)
        {
            BlockView(_store.KeyPool(l)).index_copy_(0, ids, staged.select(1, 2 * l));
            BlockView(_store.ValuePool(l)).index_copy_(0, ids, staged.select(1, 2 * l + 1));
        }
    }

    private Tensor BlockIds(ReadOnlySpan<int> blocks)
    {
        var ids = new long[blocks.Length];
        for (int i = 0; i < blocks.Length; i++) ids[i] = blocks[i];
        return torch.tensor(ids, torch.int64, device: _store.KeyPool(0).device);
    }

    /// <summary>A pool tensor [blocks × blockSize, kvHeads, headDim] seen as [blocks, block elements] (same storage).</summary>
    private Tensor BlockView(Tensor pool) => pool.view(_store.NumBlocks, _blockElements);

    private Tensor HostStaging(int blocks, KvTransferPath path)
    {
        var host = torch.empty([blocks, 2L * _store.NumLayers, _blockElements], _store.Dtype);
        return path == KvTransferPath.StagedPinned ? host.pin_memory() : host;
    }

    private unsafe Span<byte> HostBytes(Tensor host, int blocks) =>
        new(TensorPointers.Data(host), checked(blocks * _blockBytes));
}
