// The GPT-2 byte-to-unicode table used by every byte-level BPE (GPT-2, Llama-3, Qwen2).
// Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order,
// so every byte becomes a visible, non-whitespace character that BPE can merge.
namespace Platform.Core.Tokenization;

internal static class ByteLevel
{
    /// <summary>Character for each byte value.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Byte value for each mapped character, or -1 when the character is not in the table.</summary>
    private static readonly short[] CharToByteTable = BuildCharToByte();

    public static bool TryGetByte(char c, out byte value)
    {
        if (c < CharToByteTable.Length && CharToByteTable[c] >= 0)
        {
            value = (byte)CharToByteTable[c];
            return true;
        }

        value = 0;
        return false;
    }

    /// <summary>Maps UTF-8 bytes to the byte-level string that BPE works on.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        Span<char> chars = bytes.Length <= 256 ? stackalloc char[bytes.Length] : new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
        {
            chars[i] = ByteToChar[bytes[i]];
        }

        return new string(chars);
    }

    /// <summary>
    /// The bytes a byte-level token stands for. Like the Hugging Face ByteLevel decoder, a token with
    /// any character outside the table stands for its own UTF-8 bytes instead.
    /// </summary>
    public static byte[] DecodeToken(string token)
    {
        var bytes = new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
        {
            if (!TryGetByte(token[i], out bytes[i]))
            {
                return System.Text.Encoding.UTF8.GetBytes(token);
            }
        }

        return bytes;
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var assigned = new bool[256];
        for (var b = (int)'!'; b <= '~'; b++)
        {
            map[b] = (char)b;
            assigned[b] = true;
        }

        for (var b = 0xA1; b <= 0xAC; b++)
        {
            map[b] = (char)b;
            assigned[b] = true;
        }

        for (var b = 0xAE; b <= 0xFF; b++)
        {
            map[b] = (char)b;
            assigned[b] = true;
        }

        var next = 0;
        for (var b = 0; b < 256; b++)
        {
            if (!assigned[b])
            {
                map[b] = (char)(256 + next);
                next++;
            }
        }

        return map;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[512];
        Array.Fill(table, (short)-1);
        for (var b = 0; b < 256; b++)
        {
            table[ByteToChar[b]] = (short)b;
        }

        return table;
    }
}
