// Writes a small but real Hugging Face byte-level BPE tokenizer (tokenizer.json +
// tokenizer_config.json) for random-weight test models, with no download and no randomness:
//   ids 0..255     the byte tokens, id = byte value;
//   ids 256..      merges learned from a built-in English text (most frequent adjacent pair first,
//                  ties broken by ordinal order of the two token strings); when the text runs out of
//                  pairs, further merges append a letter byte to existing tokens in id order, so any
//                  vocabulary size can be reached exactly;
//   last ids       the special tokens of the family.
// Same arguments => same bytes on disk.
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Platform.Core.Tokenization;

/// <summary>What <see cref="SyntheticTokenizer.Write"/> produced.</summary>
public sealed record SyntheticTokenizerInfo(
    string Family,
    int VocabSize,
    int? BosTokenId,
    int EosTokenId,
    IReadOnlyList<int> StopTokenIds,
    IReadOnlyDictionary<string, int> SpecialTokens);

public static class SyntheticTokenizer
{
    public const string Llama3Family = "llama3";
    public const string ChatMlFamily = "chatml";

    /// <summary>Llama-3 Instruct's chat template.</summary>
    public const string Llama3ChatTemplate =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    /// <summary>The plain ChatML template (no default system prompt).</summary>
    public const string ChatMlChatTemplate =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // Suffix bytes for the extension merges once the corpus is exhausted, most frequent English letters first.
    private const string ExtensionLetters = "etaoinshrdlucmfwypvbgkjqxz";

    private const string Corpus = """
        The river town wakes before the sun. Bakers pull the first bread from their ovens, and the smell
        drifts down to the water where fishermen check their nets. A small boat carries letters, milk and
        news across to the other side; the ferryman has made the same trip for thirty-two years and still
        counts the waves. Children run to school along the stone bridge, arguing about numbers: is 1024
        bigger than 999, and why does 7 + 8 make 15? Their teacher, Mrs. Alvarez, answers every question
        with another one. "What do you think?" she asks, and they think.
        In the afternoon the market opens. Farmers sell apples, pears, onions and potatoes; a woman sells
        honey in glass jars that shine like lamps. Prices are written on cards: 3.50 for a loaf, 12 for a
        basket of plums. People talk about the weather, the harvest, the new road that will come next
        spring, and the old mill that nobody has repaired since the storm of 1998. Nothing here happens
        quickly, and that is the point. A visitor once said the town had no hurry in it at all.
        When evening comes, lights appear in the windows one by one. Someone plays a violin; someone else
        reads aloud from a book about mountains, oceans and the long history of ships. The river keeps
        moving, as it always has, carrying the day's reflections toward the sea. Tomorrow will be much the
        same, and the people who live here would not have it any other way. They don't need more; they're
        happy with what they've got, and they'll tell you so if you ask. It's a good place to be.
        """;

    /// <summary>Writes tokenizer.json and tokenizer_config.json for a family ("llama3" or "chatml") into directory.</summary>
    public static SyntheticTokenizerInfo Write(string directory, int vocabSize, string family)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var (specials, bos, eos, stops, pattern, template, addBos, ignoreMerges) = family switch
        {
            Llama3Family => (
                new[] { "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" },
                (string?)"<|begin_of_text|>", "<|eot_id|>", new[] { "<|eot_id|>", "<|end_of_text|>" },
                PreTokenizer.Llama3Pattern, Llama3ChatTemplate, true, true),
            ChatMlFamily => (
                new[] { "<|endoftext|>", "<|im_start|>", "<|im_end|>" },
                (string?)null, "<|im_end|>", new[] { "<|im_end|>", "<|endoftext|>" },
                PreTokenizer.Qwen2Pattern, ChatMlChatTemplate, false, false),
            _ => throw new ArgumentException($"Unknown tokenizer family '{family}'; supported: {Llama3Family}, {ChatMlFamily}.", nameof(family)),
        };

        var mergeCount = vocabSize - 256 - specials.Length;
        if (mergeCount < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize,
                $"The vocabulary needs at least {256 + specials.Length} ids (256 bytes + {specials.Length} special tokens).");
        }

        var (tokens, merges) = LearnMerges(pattern, mergeCount);
        var specialIds = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < specials.Length; i++)
        {
            specialIds[specials[i]] = tokens.Count + i;
        }

        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, "tokenizer.json"), TokenizerJson(tokens, merges, specialIds, pattern, ignoreMerges));
        File.WriteAllBytes(Path.Combine(directory, "tokenizer_config.json"), ConfigJson(specialIds, bos, eos, addBos, template));
        return new SyntheticTokenizerInfo(
            family,
            vocabSize,
            bos is null ? null : specialIds[bos],
            specialIds[eos],
            [.. stops.Select(s => specialIds[s])],
            specialIds);
    }

    /// <summary>Returns the ordinary tokens in id order (bytes first) and the merges in rank order.</summary>
    private static (List<string> Tokens, List<(string Left, string Right)> Merges) LearnMerges(string pattern, int mergeCount)
    {
        var tokens = new List<string>(256 + mergeCount);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var b = 0; b < 256; b++)
        {
            var t = ByteLevel.ByteToChar[b].ToString();
            ids[t] = tokens.Count;
            tokens.Add(t);
        }

        var merges = new List<(string, string)>(mergeCount);
        var words = CountWords(pattern);
        var target = 256 + mergeCount;
        while (tokens.Count < target)
        {
            var best = MostFrequentPair(words, tokens);
            if (best is not var (left, right))
            {
                break;
            }

            var merged = tokens[left] + tokens[right];
            if (!ids.TryGetValue(merged, out var mergedId))
            {
                mergedId = tokens.Count;
                ids[merged] = mergedId;
                tokens.Add(merged);
            }

            merges.Add((tokens[left], tokens[right]));
            foreach (var word in words)
            {
                ApplyMerge(word.Symbols, left, right, mergedId);
            }
        }

        // Corpus exhausted: extend existing tokens by one letter, in id order, until the size is reached.
        for (var i = 0; tokens.Count < target; i++)
        {
            foreach (var letter in ExtensionLetters)
            {
                if (tokens.Count >= target)
                {
                    break;
                }

                var suffix = letter.ToString();
                var merged = tokens[i] + suffix;
                if (ids.ContainsKey(merged))
                {
                    continue;
                }

                ids[merged] = tokens.Count;
                tokens.Add(merged);
                merges.Add((tokens[i], suffix));
            }
        }

        return (tokens, merges);
    }

    private sealed record Word(List<int> Symbols, int Count);

    private static List<Word> CountWords(string pattern)
    {
        var text = Corpus.Replace("\r\n", "\n", StringComparison.Ordinal);
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var pre = new PreTokenizer([new PreTokenizer.SplitStep(PreTokenizer.CompilePattern(pattern), removeMatches: false)]);
        foreach (var piece in pre.Split(text))
        {
            counts[piece] = counts.GetValueOrDefault(piece) + 1;
        }

        return [.. counts.Select(kv => new Word([.. Encoding.UTF8.GetBytes(kv.Key).Select(b => (int)b)], kv.Value))];
    }

    private static (int Left, int Right)? MostFrequentPair(List<Word> words, List<string> tokens)
    {
        var counts = new Dictionary<(int, int), int>();
        foreach (var word in words)
        {
            var s = word.Symbols;
            for (var i = 0; i + 1 < s.Count; i++)
            {
                counts[(s[i], s[i + 1])] = counts.GetValueOrDefault((s[i], s[i + 1])) + word.Count;
            }
        }

        (int, int)? best = null;
        var bestCount = 0;
        foreach (var (pair, count) in counts)
        {
            if (count > bestCount || (count == bestCount && ComparePairs(pair, best!.Value, tokens) < 0))
            {
                best = pair;
                bestCount = count;
            }
        }

        return best;
    }

    private static int ComparePairs((int Left, int Right) a, (int Left, int Right) b, List<string> tokens)
    {
        var c = string.CompareOrdinal(tokens[a.Left], tokens[b.Left]);
        return c != 0 ? c : string.CompareOrdinal(tokens[a.Right], tokens[b.Right]);
    }

    private static void ApplyMerge(List<int> symbols, int left, int right, int merged)
    {
        var write = 0;
        for (var read = 0; read < symbols.Count; read++)
        {
            if (read + 1 < symbols.Count && symbols[read] == left && symbols[read + 1] == right)
            {
                symbols[write++] = merged;
                read++;
            }
            else
            {
                symbols[write++] = symbols[read];
            }
        }

        symbols.RemoveRange(write, symbols.Count - write);
    }

    private static JsonWriterOptions WriterOptions => new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static byte[] TokenizerJson(List<string> tokens, List<(string Left, string Right)> merges, Dictionary<string, int> specials, string pattern, bool ignoreMerges)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var (content, id) in specials.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            w.WriteStartObject();
            w.WriteString("type", "Split");
            w.WriteStartObject("pattern");
            w.WriteString("Regex", pattern);
            w.WriteEndObject();
            w.WriteString("behavior", "Isolated");
            w.WriteBoolean("invert", false);
            w.WriteEndObject();
            WriteByteLevel(w, null, addPrefixSpace: false, useRegex: false);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteNull("post_processor");
            WriteByteLevel(w, "decoder", addPrefixSpace: true, useRegex: true);
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", ignoreMerges);
            w.WriteStartObject("vocab");
            for (var id = 0; id < tokens.Count; id++)
            {
                w.WriteNumber(tokens[id], id);
            }

            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (left, right) in merges)
            {
                w.WriteStartArray();
                w.WriteStringValue(left);
                w.WriteStringValue(right);
                w.WriteEndArray();
            }

            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        return stream.ToArray();
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string? name, bool addPrefixSpace, bool useRegex)
    {
        if (name is null)
        {
            w.WriteStartObject();
        }
        else
        {
            w.WriteStartObject(name);
        }

        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", true);
        w.WriteBoolean("use_regex", useRegex);
        w.WriteEndObject();
    }

    private static byte[] ConfigJson(Dictionary<string, int> specials, string? bos, string eos, bool addBos, string template)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, WriterOptions))
        {
            w.WriteStartObject();
            w.WriteBoolean("add_bos_token", addBos);
            w.WriteBoolean("add_eos_token", false);
            w.WriteStartObject("added_tokens_decoder");
            foreach (var (content, id) in specials.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                w.WriteString("content", content);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }

            w.WriteEndObject();
            if (bos is null)
            {
                w.WriteNull("bos_token");
            }
            else
            {
                w.WriteString("bos_token", bos);
            }

            w.WriteString("chat_template", template);
            w.WriteBoolean("clean_up_tokenization_spaces", false);
            w.WriteString("eos_token", eos);
            w.WriteNumber("model_max_length", 131072);
            w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            w.WriteEndObject();
        }

        return stream.ToArray();
    }
}
