// Blocks fetched from the remote store for one request before it was queued,
// decoded into buffers rented from the shared array pool. Whoever holds them
// owns them: the prefetch task until it hands them to the request on the
// engine thread, then the request, which gives them back when admission has
// loaded them into device blocks or when it ends, whichever comes first.
using System.Buffers;

namespace Platform.Engine.KvCache;

public sealed class PrefetchedBlocks(int start, List<byte[]> raw) : IDisposable
{
    private List<byte[]>? _raw = raw;

    /// <summary>Index, in the request's blocks, of the first block fetched.</summary>
    public int Start { get; } = start;
    public int Count => _raw?.Count ?? 0;

    /// <summary>The decoded raw bytes of block <paramref name="index"/>, when it was fetched (and not yet given back).</summary>
    public bool TryGet(int index, out byte[] block)
    {
        var list = _raw;
        block = list is not null && index >= Start && index < Start + list.Count ? list[index - Start] : null!;
        return list is not null && block is not null;
    }

    /// <summary>Gives the buffers back to the pool (idempotent).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _raw, null) is not { } list) return;
        foreach (var b in list) ArrayPool<byte>.Shared.Return(b);
    }
}
