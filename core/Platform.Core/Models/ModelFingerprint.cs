// Identity of "this model with these KV settings": architecture, shapes, the
// weights' checksum, compute dtype and block size. Blocks of different models or
// settings must never mix, in the prefix cache, the router's index or the shared
// KV store, so the block-hash seed is derived from this fingerprint.
using System.IO.Hashing;
using System.Text;

namespace Platform.Core.Models;

public sealed record ModelFingerprint(string ModelType, int NumLayers, int NumKvHeads, int HeadDim, int VocabSize,
    ulong WeightsChecksum, string ComputeDtype, int BlockSize)
{
    public string Canonical =>
        $"{ModelType}|L{NumLayers}|KV{NumKvHeads}|D{HeadDim}|V{VocabSize}|W{WeightsChecksum:x16}|{ComputeDtype}|B{BlockSize}";

    /// <summary>The seed for <see cref="Hashing.BlockHasher"/>.</summary>
    public ulong HashSeed => XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(Canonical));

    public string Id => HashSeed.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// A cheap checksum of a model directory's weights: the safetensors headers plus
    /// file sizes (the headers name every tensor with its dtype, shape and offsets).
    /// Reading the full data would cost seconds per GB at every start, and retrained
    /// weights under an identical header are not a case this needs to separate from
    /// a re-download; modification times are deliberately ignored.
    /// </summary>
    public static ulong ChecksumWeights(string modelDirectory)
    {
        var hasher = new XxHash3();
        var files = Directory.GetFiles(modelDirectory, "*.safetensors").OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal);
        Span<byte> len = stackalloc byte[8];
        foreach (var file in files)
        {
            using var s = File.OpenRead(file);
            if (s.Read(len) != 8) continue;
            long headerLength = BitConverter.ToInt64(len);
            hasher.Append(Encoding.UTF8.GetBytes(Path.GetFileName(file)));
            hasher.Append(BitConverter.GetBytes(s.Length));
            var header = new byte[(int)Math.Clamp(headerLength, 0, Math.Min(s.Length - 8, 100L << 20))];
            s.ReadExactly(header);
            hasher.Append(header);
        }
        string cfg = Path.Combine(modelDirectory, "config.json");
        if (File.Exists(cfg)) hasher.Append(File.ReadAllBytes(cfg));
        return hasher.GetCurrentHashAsUInt64();
    }
}
