// A small GGUF v3 reader for the tests, written from the format's specification independently of
// GgufWriter: it parses the header, every metadata value, the tensor infos and the data section
// start, so the tests can check what the writer put where.
using System.Buffers.Binary;
using System.Text;

namespace Platform.Bench.Tests.Peers;

internal sealed record GgufTensorInfo(string Name, long[] Dims, uint Type, long Offset);

internal sealed class GgufReader
{
    public uint Version { get; }
    public Dictionary<string, object> Metadata { get; } = new(StringComparer.Ordinal);
    public List<GgufTensorInfo> Tensors { get; } = [];
    public long DataStart { get; }
    public byte[] Bytes { get; }

    private int _position;

    public GgufReader(string path)
    {
        Bytes = File.ReadAllBytes(path);
        if (Encoding.ASCII.GetString(Bytes, 0, 4) != "GGUF") throw new InvalidDataException("not a GGUF file");
        _position = 4;
        Version = U32();
        long tensors = (long)U64(), metadata = (long)U64();
        for (long i = 0; i < metadata; i++)
        {
            string key = Str();
            Metadata[key] = Value(U32());
        }
        for (long i = 0; i < tensors; i++)
        {
            string name = Str();
            uint dimCount = U32();
            var dims = new long[dimCount];
            for (int d = 0; d < dimCount; d++) dims[d] = (long)U64();
            uint type = U32();
            Tensors.Add(new GgufTensorInfo(name, dims, type, (long)U64()));
        }
        uint alignment = Metadata.TryGetValue("general.alignment", out var a) ? (uint)a : 32;
        DataStart = (_position + alignment - 1) / alignment * alignment;
    }

    public GgufTensorInfo Tensor(string name) => Tensors.Single(t => t.Name == name);

    public byte[] Data(GgufTensorInfo t, long length) => Bytes.AsSpan((int)(DataStart + t.Offset), (int)length).ToArray();

    private object Value(uint type) => type switch
    {
        0 => Bytes[_position++],
        4 => U32(),
        5 => (int)U32(),
        6 => BitConverter.UInt32BitsToSingle(U32()),
        7 => Bytes[_position++] != 0,
        8 => Str(),
        9 => Array(),
        10 => U64(),
        _ => throw new InvalidDataException($"metadata type {type} is not read by this test reader"),
    };

    private object[] Array()
    {
        uint elementType = U32();
        long count = (long)U64();
        var items = new object[count];
        for (long i = 0; i < count; i++) items[i] = Value(elementType);
        return items;
    }

    private uint U32()
    {
        uint v = BinaryPrimitives.ReadUInt32LittleEndian(Bytes.AsSpan(_position));
        _position += 4;
        return v;
    }

    private ulong U64()
    {
        ulong v = BinaryPrimitives.ReadUInt64LittleEndian(Bytes.AsSpan(_position));
        _position += 8;
        return v;
    }

    private string Str()
    {
        int length = checked((int)U64());
        string s = Encoding.UTF8.GetString(Bytes, _position, length);
        _position += length;
        return s;
    }
}
