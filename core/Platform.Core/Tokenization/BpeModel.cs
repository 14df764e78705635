// Rank-based BPE, the Hugging Face "BPE" model without dropout. Byte-level (Llama-3, Qwen2): a piece
// becomes UTF-8 bytes, each byte a symbol. Character-level (SentencePiece-style, Llama-2, Gemma): each
// character is a symbol when the vocabulary has it, else (byte_fallback) one <0xXX> symbol per UTF-8
// byte, else unk_token. Then the adjacent pair with the lowest merge rank is merged (leftmost
// first on ties) until no pair has a merge. A priority queue over a linked list keeps long pieces
// O(n log n); a bounded cache keeps repeated words to one dictionary lookup.
using System.Collections.Concurrent;
using System.Text;

namespace Platform.Core.Tokenization;

internal sealed class BpeModel
{
    private const int MaxCachedPieceLength = 128;
    private const int MaxCacheEntries = 100_000;

    // Up to this many bytes a plain rescan (O(n^2), no allocations) beats the priority queue.
    private const int SmallWordLength = 24;

    /// <summary>SentencePiece's space, '▁'.</summary>
    private const char Space = '\u2581';

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[] _byteIds;
    private readonly bool _ignoreMerges;
    private readonly bool _byteLevel;
    private readonly bool _fuseUnknown;

    // Character-level: characters c for which some token contains "c▁". Before any other '▁' that
    // follows a non-'▁' character no token can span, so a long piece is cut there and its words are
    // merged (and cached) independently with the same result: BPE merges never cross such a cut.
    private readonly HashSet<char>? _joinsBeforeSpace;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private int _cacheCount;

    /// <param name="vocab">Byte-level token string to id.</param>
    /// <param name="merges">Pair (left id, right id) in rank order; each pair's concatenation must be in the vocab.</param>
    /// <param name="byteIds">Id of the single-byte token for each byte value (byte-level form, or &lt;0xXX&gt; for byte_fallback), or -1 when absent.</param>
    /// <param name="unknownId">Id used for a byte (or character) that has no token (Hugging Face unk_token), if any.</param>
    /// <param name="byteLevel">True for byte-level BPE; false for character-level (SentencePiece-style) BPE.</param>
    /// <param name="fuseUnknown">Consecutive unknown symbols become one (Hugging Face fuse_unk).</param>
    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(int Left, int Right, int Merged)> merges, int[] byteIds, int? unknownId, bool ignoreMerges,
        bool byteLevel = true, bool fuseUnknown = false)
    {
        _vocab = vocab;
        _byteLevel = byteLevel;
        _fuseUnknown = fuseUnknown;
        if (!byteLevel)
        {
            _joinsBeforeSpace = [];
            foreach (var token in vocab.Keys)
            {
                for (var j = 1; j < token.Length; j++)
                {
                    if (token[j] == Space && token[j - 1] != Space)
                    {
                        _joinsBeforeSpace.Add(token[j - 1]);
                    }
                }
            }
        }
        _ignoreMerges = ignoreMerges;
        _byteIds = byteIds;
        UnknownId = unknownId;
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (var rank = 0; rank < merges.Count; rank++)
        {
            var (left, right, merged) = merges[rank];
            // Hugging Face keeps the first (lowest) rank when a pair is listed twice.
            _merges.TryAdd(Key(left, right), (rank, merged));
        }
    }

    public int? UnknownId { get; }

    /// <summary>Appends the ids of one pre-tokenized piece.</summary>
    public void EncodePiece(string piece, List<int> output)
    {
        if (_joinsBeforeSpace is not null && piece.Length > SmallWordLength)
        {
            var start = 0;
            for (var i = 1; i < piece.Length; i++)
            {
                if (piece[i] == Space && piece[i - 1] != Space && !_joinsBeforeSpace.Contains(piece[i - 1]))
                {
                    EncodeWord(piece[start..i], output);
                    start = i;
                }
            }

            EncodeWord(start == 0 ? piece : piece[start..], output);
            return;
        }

        EncodeWord(piece, output);
    }

    private void EncodeWord(string piece, List<int> output)
    {
        if (piece.Length <= MaxCachedPieceLength && _cache.TryGetValue(piece, out var cached))
        {
            output.AddRange(cached);
            return;
        }

        var ids = EncodeUncached(piece);
        if (piece.Length <= MaxCachedPieceLength)
        {
            // ConcurrentDictionary.Count takes every lock, so the size is tracked separately (approximately under races).
            if (_cacheCount >= MaxCacheEntries)
            {
                _cache.Clear();
                Interlocked.Exchange(ref _cacheCount, 0);
            }

            if (_cache.TryAdd(piece, ids))
            {
                Interlocked.Increment(ref _cacheCount);
            }
        }

        output.AddRange(ids);
    }

    private int[] EncodeUncached(string piece)
    {
        if (!_byteLevel)
        {
            return EncodeCharacters(piece);
        }

        var bytes = Encoding.UTF8.GetBytes(piece);
        if (_ignoreMerges && _vocab.TryGetValue(ByteLevel.Encode(bytes), out var whole))
        {
            return [whole];
        }

        var symbols = new List<int>(bytes.Length);
        foreach (var b in bytes)
        {
            var id = _byteIds[b];
            if (id >= 0)
            {
                symbols.Add(id);
            }
            else if (UnknownId is int unk)
            {
                symbols.Add(unk);
            }

            // Like Hugging Face without unk_token: a byte with no token is dropped. Load refuses such vocabularies.
        }

        return Merge(symbols);
    }

    private int[] EncodeCharacters(string piece)
    {
        if (_ignoreMerges && _vocab.TryGetValue(piece, out var whole))
        {
            return [whole];
        }

        var symbols = new List<int>(piece.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < piece.Length; i++)
        {
            var width = char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]) ? 2 : 1;
            if (_vocab.TryGetValue(piece.Substring(i, width), out var id))
            {
                symbols.Add(id);
            }
            else
            {
                var n = Encoding.UTF8.GetBytes(piece.AsSpan(i, width), utf8);
                var fellBack = true;
                for (var b = 0; b < n; b++)
                {
                    fellBack &= _byteIds[utf8[b]] >= 0;
                }

                if (fellBack)
                {
                    for (var b = 0; b < n; b++)
                    {
                        symbols.Add(_byteIds[utf8[b]]);
                    }
                }
                else if (UnknownId is int unk && !(_fuseUnknown && symbols.Count > 0 && symbols[^1] == unk))
                {
                    symbols.Add(unk);
                }
            }

            i += width - 1;
        }

        return Merge(symbols);
    }

    private int[] Merge(List<int> symbols)
    {
        var n = symbols.Count;
        if (n < 2)
        {
            return [.. symbols];
        }

        if (n <= SmallWordLength)
        {
            return MergeSmall(symbols);
        }

        var sym = symbols.ToArray();
        var prev = new int[n];
        var next = new int[n];
        for (var i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Priority: rank in the high 32 bits, position of the left symbol in the low 32 bits.
        var queue = new PriorityQueue<(int Pos, int Left, int Right, int NewId), long>();
        for (var i = 0; i + 1 < n; i++)
        {
            TryEnqueue(queue, sym, i, i + 1);
        }

        var alive = n;
        while (queue.TryDequeue(out var e, out _))
        {
            var right = next[e.Pos];
            if (sym[e.Pos] != e.Left || right < 0 || sym[right] != e.Right)
            {
                continue; // stale: one side was merged since this entry was queued
            }

            sym[e.Pos] = e.NewId;
            sym[right] = -1;
            var after = next[right];
            next[e.Pos] = after;
            if (after >= 0)
            {
                prev[after] = e.Pos;
            }

            alive--;
            if (prev[e.Pos] >= 0)
            {
                TryEnqueue(queue, sym, prev[e.Pos], e.Pos);
            }

            if (after >= 0)
            {
                TryEnqueue(queue, sym, e.Pos, after);
            }
        }

        var result = new int[alive];
        var k = 0;
        for (var i = 0; i >= 0; i = next[i])
        {
            result[k++] = sym[i];
        }

        return result;
    }

    /// <summary>Same result as the queue: repeatedly merge the lowest-rank pair, leftmost on ties.</summary>
    private int[] MergeSmall(List<int> symbols)
    {
        while (symbols.Count > 1)
        {
            var bestPos = -1;
            var bestRank = int.MaxValue;
            var bestId = 0;
            for (var i = 0; i + 1 < symbols.Count; i++)
            {
                if (_merges.TryGetValue(Key(symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                {
                    bestPos = i;
                    bestRank = m.Rank;
                    bestId = m.NewId;
                }
            }

            if (bestPos < 0)
            {
                break;
            }

            symbols[bestPos] = bestId;
            symbols.RemoveAt(bestPos + 1);
        }

        return [.. symbols];
    }

    private void TryEnqueue(PriorityQueue<(int, int, int, int), long> queue, int[] sym, int left, int right)
    {
        if (_merges.TryGetValue(Key(sym[left], sym[right]), out var m))
        {
            queue.Enqueue((left, sym[left], sym[right], m.NewId), ((long)m.Rank << 32) | (uint)left);
        }
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;
}
