// Writes a GGUF version 3 file (the model format llama.cpp loads): the header, typed metadata
// key/values, tensor infos, then every tensor's data at an offset aligned to general.alignment.
// Little-endian throughout, as the format requires. Tensor bytes are produced one tensor at a time
// by a callback, so a multi-gigabyte model is never held in memory at once.
//
// Layout facts this follows (from the GGUF specification):
//   magic "GGUF", uint32 version, uint64 tensor count, uint64 metadata count;
//   a string is a uint64 byte length then UTF-8 bytes; a metadata value is a uint32 type tag then the value;
//   an array is the element type, a uint64 count, then the elements;
//   a tensor info is its name, uint32 dimension count, uint64 dimensions innermost first (ne0 = row length),
//   uint32 ggml type and a uint64 offset from the start of the data section;
//   the data section starts at the next multiple of the alignment after the tensor infos.
using System.Text;

namespace Platform.Bench.Peers;

/// <summary>GGUF metadata value types (gguf_type).</summary>
internal enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types this writer produces.</summary>
internal enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
}

internal sealed class GgufWriter
{
    public const uint Version = 3;
    public const uint DefaultAlignment = 32;
    private static readonly byte[] Magic = "GGUF"u8.ToArray();

    private readonly List<(string Key, GgufValueType Type, object Value)> _metadata = [];
    private readonly List<(string Name, GgmlType Type, long[] Dims, Func<byte[]> Data)> _tensors = [];

    public uint Alignment { get; }

    public GgufWriter(uint alignment = DefaultAlignment)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            throw new ArgumentException($"the GGUF alignment must be a power of two, got {alignment}");
        Alignment = alignment;
        if (alignment != DefaultAlignment) AddUInt32("general.alignment", alignment);
    }

    public void AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, value);
    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);
    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public void AddStringArray(string key, IReadOnlyList<string> values) => Add(key, GgufValueType.Array, (GgufValueType.String, (object)values));
    public void AddInt32Array(string key, IReadOnlyList<int> values) => Add(key, GgufValueType.Array, (GgufValueType.Int32, (object)values));
    public void AddFloat32Array(string key, IReadOnlyList<float> values) => Add(key, GgufValueType.Array, (GgufValueType.Float32, (object)values));

    /// <summary>
    /// Adds a tensor. <paramref name="dims"/> is in ggml order, innermost first: a PyTorch [out, in] matrix is [in, out].
    /// <paramref name="data"/> returns exactly <see cref="TensorBytes"/> bytes when the file is written.
    /// </summary>
    public void AddTensor(string name, GgmlType type, long[] dims, Func<byte[]> data)
    {
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"tensor '{name}' added twice");
        if (dims.Length is < 1 or > 4) throw new ArgumentException($"a ggml tensor has 1 to 4 dimensions, '{name}' has {dims.Length}");
        if (type == GgmlType.Q8_0 && dims[0] % GgufTensorEncoding.Q8BlockSize != 0)
            throw new ArgumentException($"q8_0 needs rows that are a multiple of {GgufTensorEncoding.Q8BlockSize}; '{name}' has rows of {dims[0]}");
        _tensors.Add((name, type, dims, data));
    }

    /// <summary>Bytes of a tensor of this type and shape in the data section.</summary>
    public static long TensorBytes(GgmlType type, long[] dims)
    {
        long count = dims.Aggregate(1L, (a, b) => a * b);
        return type switch
        {
            GgmlType.F32 => count * 4,
            GgmlType.F16 => count * 2,
            GgmlType.Q8_0 => count / GgufTensorEncoding.Q8BlockSize * GgufTensorEncoding.Q8BlockBytes,
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
        };
    }

    public void Write(string path, IProgress<double>? progress = null)
    {
        string tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(Version);
            w.Write((ulong)_tensors.Count);
            w.Write((ulong)_metadata.Count);
            foreach (var (key, type, value) in _metadata)
            {
                WriteString(w, key);
                w.Write((uint)type);
                WriteValue(w, type, value);
            }
            long offset = 0;
            var offsets = new long[_tensors.Count];
            for (int i = 0; i < _tensors.Count; i++)
            {
                var (name, type, dims, _) = _tensors[i];
                WriteString(w, name);
                w.Write((uint)dims.Length);
                foreach (long d in dims) w.Write((ulong)d);
                w.Write((uint)type);
                offsets[i] = offset;
                w.Write((ulong)offset);
                offset = AlignUp(offset + TensorBytes(type, dims), Alignment);
            }
            Pad(w, AlignUp(stream.Position, Alignment) - stream.Position);
            long dataStart = stream.Position;
            for (int i = 0; i < _tensors.Count; i++)
            {
                var (name, type, dims, data) = _tensors[i];
                Pad(w, dataStart + offsets[i] - stream.Position);
                byte[] bytes = data();
                if (bytes.LongLength != TensorBytes(type, dims))
                    throw new InvalidOperationException($"tensor '{name}' produced {bytes.LongLength} bytes, its type and shape need {TensorBytes(type, dims)}");
                w.Write(bytes);
                progress?.Report((i + 1.0) / _tensors.Count);
            }
            Pad(w, AlignUp(stream.Position, Alignment) - stream.Position);
        }
        File.Move(tmp, path, overwrite: true);
    }

    private void Add(string key, GgufValueType type, object value)
    {
        if (_metadata.Any(m => m.Key == key)) throw new ArgumentException($"metadata key '{key}' added twice");
        _metadata.Add((key, type, value));
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.Array:
            {
                var (elementType, items) = ((GgufValueType, object))value;
                w.Write((uint)elementType);
                switch (items)
                {
                    case IReadOnlyList<string> strings:
                        w.Write((ulong)strings.Count);
                        foreach (var s in strings) WriteString(w, s);
                        break;
                    case IReadOnlyList<int> ints:
                        w.Write((ulong)ints.Count);
                        foreach (int v in ints) w.Write(v);
                        break;
                    case IReadOnlyList<float> floats:
                        w.Write((ulong)floats.Count);
                        foreach (float v in floats) w.Write(v);
                        break;
                    default: throw new ArgumentException($"unsupported GGUF array of {elementType}");
                }
                break;
            }
            default: throw new ArgumentException($"unsupported GGUF value type {type}");
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void Pad(BinaryWriter w, long count)
    {
        for (long i = 0; i < count; i++) w.Write((byte)0);
    }

    public static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;
}
