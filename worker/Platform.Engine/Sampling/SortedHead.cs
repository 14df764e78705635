// The head of a row's sampling weights in descending order (ties by the lower token id), as far as top-k and top-p
// reach, without sorting the whole vocabulary. Sorting all 128K weights of a Llama 3 row took ~30 ms per draw, more
// than a decode step of the model. A histogram over the weights' high bits finds the bin where the head must end,
// and only the weights in and above that bin are sorted: typically a few hundred.
namespace Platform.Engine.Sampling;

internal sealed class SortedHead
{
    // Weights are in (0, 1] (the most likely token weighs 1), so their float bits are at most 0x3F800000. The high
    // 16 bits (exponent and 7 mantissa bits) make bins under 1 % wide.
    private const int Shift = 16;
    private const int One = 0x3F800000;
    private const int Bins = (One >> Shift) + 1;

    private readonly int[] _count = new int[Bins];
    private readonly double[] _mass = new double[Bins];
    private ulong[] _keys = [];

    /// <summary>
    /// Writes the kept tokens, most likely first, to <paramref name="order"/> and returns how many: the first
    /// <paramref name="topK"/> (0: no limit), then as many as it takes for their share of those to reach
    /// <paramref name="topP"/> (1: all). Tokens of weight 0 (cut by min-p) are never kept.
    /// </summary>
    public int Cut(ReadOnlySpan<float> weights, int topK, double topP, Span<int> order)
    {
        Array.Clear(_count);
        Array.Clear(_mass);
        int nonzero = 0;
        double all = 0;
        foreach (float w in weights)
        {
            if (w <= 0) continue;
            int bin = BitConverter.SingleToInt32Bits(w) >> Shift;
            _count[bin]++;
            _mass[bin] += w;
            nonzero++;
            all += w;
        }
        int k = topK > 0 ? Math.Min(topK, nonzero) : nonzero;

        // From the top bin down to the first where the head must end: k tokens, or (top-p alone) p of the mass, plus
        // one more bin so that summing in another order cannot leave the cut just past the candidates.
        int stop = 0, seen = 0;
        double mass = 0;
        bool reached = false;
        for (int bin = Bins - 1; bin >= 0; bin--)
        {
            if (_count[bin] == 0) continue;
            seen += _count[bin];
            mass += _mass[bin];
            if (topK > 0 ? seen >= k : reached)
            {
                stop = bin;
                break;
            }
            reached = mass >= topP * all;
        }

        int count = Collect(weights, stop);
        int keep = k;
        if (topP < 1)
        {
            double total = 0;
            if (topK > 0)
                for (int i = 0; i < keep; i++) total += Weight(weights, i);
            else
                total = all;
            if (!WithinShare(weights, Math.Min(keep, count), total, topP, ref keep) && keep > count)
            {
                // The candidates ran out before the share was reached (only possible through rounding): sort them all.
                count = Collect(weights, 0);
                WithinShare(weights, keep, total, topP, ref keep);
            }
        }
        for (int i = 0; i < keep; i++) order[i] = (int)(uint)_keys[i];
        return keep;
    }

    /// <summary>Sorts every positive weight in <paramref name="fromBin"/> or above into _keys; returns how many.</summary>
    private int Collect(ReadOnlySpan<float> weights, int fromBin)
    {
        if (_keys.Length < weights.Length) _keys = new ulong[weights.Length];
        int count = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            float w = weights[i];
            if (w <= 0) continue;
            int bits = BitConverter.SingleToInt32Bits(w);
            if (bits >> Shift < fromBin) continue;
            // Ascending keys: the heavier weight first, then the lower id.
            _keys[count++] = ((ulong)(uint)(One - bits) << 32) | (uint)i;
        }
        _keys.AsSpan(0, count).Sort();
        return count;
    }

    private float Weight(ReadOnlySpan<float> weights, int rank) => weights[(int)(uint)_keys[rank]];

    /// <summary>Walks the first <paramref name="limit"/> sorted weights until their share of <paramref name="total"/>
    /// reaches <paramref name="topP"/>; sets <paramref name="keep"/> to the count so far when it does.</summary>
    private bool WithinShare(ReadOnlySpan<float> weights, int limit, double total, double topP, ref int keep)
    {
        double cumulative = 0;
        for (int i = 0; i < limit; i++)
        {
            cumulative += Weight(weights, i) / total;
            if (cumulative >= topP)
            {
                keep = i + 1;
                return true;
            }
        }
        return false;
    }
}
