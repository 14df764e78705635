// Zero-filled memory that costs nothing until it is used. A KV pool is sized for the most the
// worker may ever hold (a fraction of its memory), but a fresh pool holds nothing: filling it
// with zeros up front touches every page, so each worker's resident memory jumps to its whole
// budget at start, and several workers on one machine (or pods on one node) exceed it together.
// Instead the pool is allocated uninitialised and its page-aligned interior is handed back to
// the kernel with madvise(MADV_DONTNEED): on Linux, private anonymous pages so released read as
// zeros and are only backed by memory once written. The partial pages at either end are zeroed
// by hand. Readers still see zeros everywhere (attention over a partly written block must not
// meet garbage: a NaN times a zero probability is still NaN), exactly as with torch.zeros.
using Platform.Core.Memory;
using static TorchSharp.torch;

namespace Platform.Engine.KvCache;

internal static class LazyZeroMemory
{
    private const long Page = 4096;

    /// <summary>A zero-filled CPU tensor whose pages are committed on first write (on Linux; elsewhere, and
    /// on other devices, an ordinary zeros tensor).</summary>
    public static unsafe Tensor Zeros(long[] shape, ScalarType dtype)
    {
        if (!OperatingSystem.IsLinux()) return zeros(shape, dtype);
        var tensor = empty(shape, dtype);
        long bytes = tensor.NumberOfElements * tensor.ElementSize;
        byte* start = (byte*)Torch.TensorPointers.Data(tensor);
        long head = Math.Min(bytes, (Page - (long)start % Page) % Page);
        long interior = (bytes - head) / Page * Page;
        new Span<byte>(start, (int)head).Clear();
        ClearTail(start + head + interior, bytes - head - interior);
        if (interior > 0 && !PageAdvice.ReleaseWholePages(start + head, interior))
        {
            // Not anonymous private memory after all: zero it the ordinary way.
            tensor.zero_();
        }
        return tensor;
    }

    private static unsafe void ClearTail(byte* at, long length)
    {
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, int.MaxValue);
            new Span<byte>(at, chunk).Clear();
            at += chunk;
            length -= chunk;
        }
    }
}
