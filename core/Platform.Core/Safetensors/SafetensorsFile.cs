// A memory-mapped reader for the safetensors format (8-byte little-endian header
// length, a JSON header of {name: {dtype, shape, data_offsets}}, then raw data).
// Tensors are exposed as spans over the mapping, so loading never copies a whole
// file into managed memory. The header is checked against the file before any
// byte is trusted: offsets inside the data region, sizes equal to shape × dtype,
// no overlaps. A lying or truncated file is a ModelLoadException naming it.
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using Platform.Core.Memory;

namespace Platform.Core.Safetensors;

public enum SafetensorsDtype { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL }

public sealed record TensorInfo(string Name, SafetensorsDtype Dtype, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long ByteLength => End - Begin;
}

public sealed unsafe class SafetensorsFile : IDisposable
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly long _length;
    private readonly Dictionary<string, TensorInfo> _tensors;

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, long dataStart, long length,
        Dictionary<string, TensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path; _map = map; _view = view; _base = basePtr; _dataStart = dataStart; _length = length; _tensors = tensors; Metadata = metadata;
    }

    /// <summary>The file's length in bytes (header and data), the range <see cref="PopulatePages"/> covers.</summary>
    public long Length => _length;

    /// <summary>
    /// Maps the file's pages in [offset, offset + length) into this process now, as first reads would one fault at
    /// a time (PageAdvice.Populate; from the page cache, or read from disk first). False where the kernel or OS
    /// cannot: the pages then come at first touch, as before.
    /// </summary>
    public bool PopulatePages(long offset, long length)
    {
        if (offset < 0 || length <= 0 || offset >= _length) return false;
        return PageAdvice.Populate(_base + offset, Math.Min(_length - offset, length));
    }

    public static int DtypeSize(SafetensorsDtype d) => d switch
    {
        SafetensorsDtype.F64 or SafetensorsDtype.I64 => 8,
        SafetensorsDtype.F32 or SafetensorsDtype.I32 => 4,
        SafetensorsDtype.F16 or SafetensorsDtype.BF16 or SafetensorsDtype.I16 => 2,
        _ => 1,
    };

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
            throw new ModelLoadException($"{path} is missing; check the model directory (or model.safetensors.index.json's weight_map).");
        // A symlink (the Hugging Face cache links snapshot files to its blobs) has its own, tiny length: use the target's.
        var info = new FileInfo(path);
        if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
        long length = info.Length;
        if (length < 8)
            throw new ModelLoadException($"{path} is truncated ({length} bytes): a safetensors file starts with an 8-byte header length. Re-download it.");
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* basePtr = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        basePtr += view.PointerOffset;
        try
        {
            long headerLength = *(long*)basePtr;
            if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > length)
                throw new ModelLoadException($"{path}: header length {headerLength} does not fit a file of {length} bytes; the file is truncated or not safetensors.");
            var headerSpan = new ReadOnlySpan<byte>(basePtr + 8, (int)headerLength);
            long dataStart = 8 + headerLength;
            var (tensors, metadata) = ParseHeader(path, headerSpan, length - dataStart);
            return new SafetensorsFile(path, map, view, basePtr, dataStart, length, tensors, metadata);
        }
        catch
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
            map.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonDocument doc;
        try
        {
            var reader = new Utf8JsonReader(header.TrimEnd((byte)' '));
            doc = JsonDocument.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            throw new ModelLoadException($"{path}: the safetensors header is not valid JSON ({e.Message}); the file is corrupt.", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException($"{path}: the safetensors header must be a JSON object.");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                tensors[prop.Name] = ParseTensor(path, prop.Name, prop.Value, dataLength);
            }
        }
        var ordered = tensors.Values.OrderBy(t => t.Begin).ToList();
        for (int i = 1; i < ordered.Count; i++)
        {
            if (ordered[i].Begin < ordered[i - 1].End && ordered[i].ByteLength > 0)
                throw new ModelLoadException($"{path}: tensors '{ordered[i - 1].Name}' and '{ordered[i].Name}' overlap in the data region; the header is corrupt.");
        }
        return (tensors, metadata);
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement e, long dataLength)
    {
        string where = $"{path}: tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object)
            throw new ModelLoadException($"{where}: entry must be an object with dtype, shape and data_offsets.");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String || !Enum.TryParse<SafetensorsDtype>(dt.GetString(), out var dtype))
            throw new ModelLoadException($"{where}: unknown or missing dtype {(e.TryGetProperty("dtype", out var d2) ? d2.GetRawText() : "(none)")}; supported: F32, F16, BF16 (and integer types).");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new ModelLoadException($"{where}: missing shape.");
        var shape = new long[sh.GetArrayLength()];
        int k = 0;
        foreach (var s in sh.EnumerateArray())
        {
            if (!s.TryGetInt64(out long dim) || dim < 0) throw new ModelLoadException($"{where}: shape holds an invalid dimension {s.GetRawText()}.");
            shape[k++] = dim;
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end))
            throw new ModelLoadException($"{where}: data_offsets must be [begin, end].");
        if (begin < 0 || end < begin || end > dataLength)
            throw new ModelLoadException($"{where}: data_offsets [{begin}, {end}] lie outside the {dataLength} data bytes; the file is truncated or the header lies.");
        var info = new TensorInfo(name, dtype, shape, begin, end);
        long expected = info.ElementCount * DtypeSize(dtype);
        if (expected != info.ByteLength)
            throw new ModelLoadException($"{where}: shape [{string.Join(", ", shape)}] of {dtype} needs {expected} bytes but data_offsets give {info.ByteLength}; the header lies about the size.");
        return info;
    }

    public TensorInfo Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t
        : throw new ModelLoadException($"{Path}: tensor '{name}' is missing; the checkpoint does not match the architecture in config.json.");

    /// <summary>The raw bytes of a tensor, as a span over the memory mapping (valid until Dispose).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo t) => new(_base + _dataStart + t.Begin, checked((int)t.ByteLength));

    /// <summary>A pointer to the raw bytes (for tensors over 2 GiB, where a span cannot reach).</summary>
    public byte* GetPointer(TensorInfo t) => _base + _dataStart + t.Begin;

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
