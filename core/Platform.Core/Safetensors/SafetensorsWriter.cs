// Writes safetensors files deterministically (tensors in the order added, a
// header padded to 8 bytes as the reference implementation does), so the random
// model generator gives the same bytes for the same seed.
using System.Text;
using System.Text.Json.Nodes;

namespace Platform.Core.Safetensors;

public sealed class SafetensorsWriter
{
    private readonly List<(string Name, SafetensorsDtype Dtype, long[] Shape, long Bytes, Func<byte[]> Produce)> _tensors = [];
    private readonly Dictionary<string, string> _metadata = new(StringComparer.Ordinal);

    public long TotalBytes => _tensors.Sum(t => t.Bytes);
    public int Count => _tensors.Count;

    public void AddMetadata(string key, string value) => _metadata[key] = value;

    public void Add(string name, SafetensorsDtype dtype, long[] shape, byte[] data) => Add(name, dtype, shape, () => data);

    /// <summary>Adds a tensor whose bytes are produced only when written, so a large model never sits in memory whole.</summary>
    public void Add(string name, SafetensorsDtype dtype, long[] shape, Func<byte[]> produce)
    {
        long bytes = shape.Aggregate(1L, (a, b) => a * b) * SafetensorsFile.DtypeSize(dtype);
        _tensors.Add((name, dtype, shape, bytes, produce));
    }

    public void Write(string path)
    {
        var header = new JsonObject();
        if (_metadata.Count > 0)
        {
            var meta = new JsonObject();
            foreach (var (k, v) in _metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) meta[k] = v;
            header["__metadata__"] = meta;
        }
        long offset = 0;
        foreach (var t in _tensors)
        {
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.Dtype.ToString(),
                ["shape"] = new JsonArray(t.Shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Bytes),
            };
            offset += t.Bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BitConverter.TryWriteBytes(len, (long)padded);
        stream.Write(len);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
        foreach (var t in _tensors)
        {
            byte[] data = t.Produce();
            if (data.Length != t.Bytes)
                throw new InvalidOperationException($"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] of {t.Dtype} needs {t.Bytes} bytes, got {data.Length}.");
            stream.Write(data);
        }
    }
}
