// Converts q/k projection rows between the two RoPE layouts in use.
// Hugging Face's Llama rotates halves: within a head of d rows, row i pairs with row i + d/2.
// Meta's original checkpoints, llama.cpp's GGUF "llama" tensors and llama2.c rotate adjacent pairs:
// row 2i pairs with row 2i + 1. The conversion keeps the pairs and changes only the row order:
// interleaved row 2i + j (j = 0, 1) is rotate-half row j·d/2 + i, head by head. Rows are rows of a
// PyTorch [out, in] weight (or entries of a bias), so a row is `columns` consecutive values.
namespace Platform.Bench.Peers;

internal static class RopeLayout
{
    /// <summary>Rotate-half (Hugging Face) rows to interleaved pairs (llama.cpp, llama2.c).</summary>
    public static float[] RotateHalfToInterleaved(ReadOnlySpan<float> weight, int heads, int headDim, int columns) =>
        Permute(weight, heads, headDim, columns, toInterleaved: true);

    /// <summary>Interleaved pairs back to rotate-half rows: the inverse of <see cref="RotateHalfToInterleaved"/>.</summary>
    public static float[] InterleavedToRotateHalf(ReadOnlySpan<float> weight, int heads, int headDim, int columns) =>
        Permute(weight, heads, headDim, columns, toInterleaved: false);

    private static float[] Permute(ReadOnlySpan<float> weight, int heads, int headDim, int columns, bool toInterleaved)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"RoPE needs an even head dimension, got {headDim}");
        if (weight.Length != (long)heads * headDim * columns)
            throw new ArgumentException($"expected {heads} heads × {headDim} rows × {columns} columns = {(long)heads * headDim * columns} values, got {weight.Length}");
        var result = new float[weight.Length];
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                for (int j = 0; j < 2; j++)
                {
                    int interleaved = h * headDim + 2 * i + j;
                    int rotateHalf = h * headDim + j * half + i;
                    int from = toInterleaved ? rotateHalf : interleaved;
                    int to = toInterleaved ? interleaved : rotateHalf;
                    weight.Slice(from * columns, columns).CopyTo(result.AsSpan(to * columns, columns));
                }
            }
        }
        return result;
    }
}
