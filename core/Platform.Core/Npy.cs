// Minimal NumPy .npy (format 1.0) writer and reader for float32 matrices, so
// logits can be compared with Python implementations without extra tooling.
using System.Text;

namespace Platform.Core;

public static class Npy
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0];

    public static void WriteFloat32(string path, ReadOnlySpan<float> data, int rows, int cols)
    {
        if ((long)rows * cols != data.Length) throw new ArgumentException($"{rows}×{cols} does not match {data.Length} values");
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}";
        int unpadded = Magic.Length + 2 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        using var s = File.Create(path);
        s.Write(Magic);
        s.Write(BitConverter.GetBytes((ushort)header.Length));
        s.Write(Encoding.ASCII.GetBytes(header));
        s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data));
    }

    public static (float[] Data, int Rows, int Cols) ReadFloat32(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || !bytes.AsSpan(0, 8).SequenceEqual(Magic)) throw new InvalidDataException($"{path} is not a version 1.0 .npy file");
        int headerLength = BitConverter.ToUInt16(bytes, 8);
        string header = Encoding.ASCII.GetString(bytes, 10, headerLength);
        if (!header.Contains("'<f4'", StringComparison.Ordinal)) throw new InvalidDataException($"{path}: only little-endian float32 is supported");
        int open = header.IndexOf('(', StringComparison.Ordinal), close = header.IndexOf(')', StringComparison.Ordinal);
        var dims = header[(open + 1)..close].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        int rows = dims[0], cols = dims.Length > 1 ? dims[1] : 1;
        var data = new float[(long)rows * cols];
        Buffer.BlockCopy(bytes, 10 + headerLength, data, 0, data.Length * 4);
        return (data, rows, cols);
    }
}
