// Reads the Hugging Face tokenizer files of a model directory into plain data: tokenizer.json
// (or the older vocab.json + merges.txt pair) and tokenizer_config.json. Every problem becomes a
// TokenizerLoadException naming the file and the field, so a bad download never surfaces as a
// KeyNotFoundException deep inside encoding.
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Platform.Core.Tokenization;

/// <summary>An added token; LStrip/RStrip make a literal match also swallow the whitespace on that side (Hugging Face semantics).</summary>
internal sealed record AddedTokenSpec(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false);

internal sealed record TokenizerSpec(
    string SourceFile,
    Dictionary<string, int> Vocab,
    List<(string Left, string Right, string Field)> Merges,
    List<AddedTokenSpec> AddedTokens,
    PreTokenizer PreTokenizer,
    bool NormalizeNfc,
    string? UnknownToken,
    bool IgnoreMerges);

internal sealed record TokenizerConfigSpec(
    string? SourceFile,
    string? BosToken,
    string? EosToken,
    bool? AddBosToken,
    string? ChatTemplate,
    List<AddedTokenSpec> AddedTokens);

internal static class TokenizerFiles
{
    private const string RedownloadFix = "re-download the file from the model repository; it may be truncated or hand-edited.";

    public static TokenizerSpec ReadTokenizerJson(string path)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, "(root)", "the top level is not a JSON object.", RedownloadFix);
        }

        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, "model", "the 'model' object is missing.", RedownloadFix);
        }

        var type = OptionalString(path, model, "type", "model.type");
        if (type is not null && type != "BPE")
        {
            throw Error(path, "model.type", $"model type '{type}' is not supported; only byte-level BPE (type \"BPE\") is.",
                "use a model whose tokenizer is byte-level BPE (Llama-3, Qwen2, GPT-2 families).");
        }

        if (model.TryGetProperty("byte_fallback", out var byteFallback) && byteFallback.ValueKind == JsonValueKind.True)
        {
            throw Error(path, "model.byte_fallback", "SentencePiece-style BPE with byte_fallback is not supported; only byte-level BPE is.",
                "use a model whose tokenizer is byte-level BPE (Llama-3, Qwen2, GPT-2 families).");
        }

        foreach (var affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (OptionalString(path, model, affix, "model." + affix) is { Length: > 0 })
            {
                throw Error(path, "model." + affix, "sub-word prefixes/suffixes are not supported by byte-level BPE.",
                    "use a byte-level BPE tokenizer, or set the field to null.");
            }
        }

        if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, "model.vocab", "the vocabulary object is missing.", RedownloadFix);
        }

        var vocab = ReadVocab(path, vocabElement, "model.vocab");
        if (!model.TryGetProperty("merges", out var mergesElement) || mergesElement.ValueKind != JsonValueKind.Array)
        {
            throw Error(path, "model.merges", "the merges array is missing.", RedownloadFix);
        }

        var merges = new List<(string, string, string)>(mergesElement.GetArrayLength());
        var index = 0;
        foreach (var m in mergesElement.EnumerateArray())
        {
            var field = $"model.merges[{index}]";
            if (m.ValueKind == JsonValueKind.String)
            {
                merges.Add(SplitMergeLine(path, field, m.GetString()!));
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
            {
                merges.Add((m[0].GetString()!, m[1].GetString()!, field));
            }
            else
            {
                throw Error(path, field, "a merge must be a string \"left right\" or an array [\"left\", \"right\"].", RedownloadFix);
            }

            index++;
        }

        var added = new List<AddedTokenSpec>();
        if (root.TryGetProperty("added_tokens", out var addedElement) && addedElement.ValueKind != JsonValueKind.Null)
        {
            if (addedElement.ValueKind != JsonValueKind.Array)
            {
                throw Error(path, "added_tokens", "must be an array.", RedownloadFix);
            }

            index = 0;
            foreach (var t in addedElement.EnumerateArray())
            {
                added.Add(ReadAddedToken(path, $"added_tokens[{index}]", t, fixedId: null));
                index++;
            }
        }

        var normalizeNfc = ReadNormalizer(path, root);
        var preTokenizer = root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind != JsonValueKind.Null
            ? new PreTokenizer(ReadPreTokenizerSteps(path, pre, "pre_tokenizer"))
            : PreTokenizer.Gpt2Default();
        var unk = OptionalString(path, model, "unk_token", "model.unk_token");
        var ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        return new TokenizerSpec(path, vocab, merges, added, preTokenizer, normalizeNfc, unk, ignoreMerges);
    }

    public static TokenizerSpec ReadVocabAndMerges(string vocabPath, string mergesPath)
    {
        Dictionary<string, int> vocab;
        using (var doc = ParseJson(vocabPath))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Error(vocabPath, "(root)", "vocab.json must be a JSON object of token -> id.", RedownloadFix);
            }

            vocab = ReadVocab(vocabPath, doc.RootElement, "(root)");
        }

        string[] lines;
        try
        {
            lines = File.ReadAllLines(mergesPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Error(mergesPath, "(file)", $"cannot be read: {ex.Message}", "check that the file exists and is readable.", ex);
        }

        var merges = new List<(string, string, string)>(lines.Length);
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal)))
            {
                continue;
            }

            merges.Add(SplitMergeLine(mergesPath, $"line {i + 1}", line));
        }

        return new TokenizerSpec(vocabPath, vocab, merges, [], PreTokenizer.Gpt2Default(), NormalizeNfc: false, UnknownToken: null, IgnoreMerges: false);
    }

    public static TokenizerConfigSpec ReadConfig(string path)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, "(root)", "the top level is not a JSON object.", RedownloadFix);
        }

        var bos = ReadTokenName(path, root, "bos_token");
        var eos = ReadTokenName(path, root, "eos_token");
        bool? addBos = null;
        if (root.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind != JsonValueKind.Null)
        {
            addBos = ab.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Error(path, "add_bos_token", "must be true or false.", "set it to true or false."),
            };
        }

        string? template = null;
        if (root.TryGetProperty("chat_template", out var ct))
        {
            template = ct.ValueKind switch
            {
                JsonValueKind.String => ct.GetString(),
                JsonValueKind.Null => null,
                // Newer configs list named templates: [{"name": "default", "template": "..."}, ...].
                JsonValueKind.Array => ReadNamedTemplate(path, ct),
                _ => throw Error(path, "chat_template", "must be a string or a list of {name, template}.", RedownloadFix),
            };
        }

        var added = new List<AddedTokenSpec>();
        if (root.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in dec.EnumerateObject())
            {
                var field = $"added_tokens_decoder[\"{p.Name}\"]";
                if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id))
                {
                    throw Error(path, field, "keys must be token ids.", RedownloadFix);
                }

                added.Add(ReadAddedToken(path, field, p.Value, id));
            }
        }

        return new TokenizerConfigSpec(path, bos, eos, addBos, template, added);
    }

    public static string ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Error(path, "(file)", $"cannot be read: {ex.Message}", "check that the file exists and is readable.", ex);
        }
    }

    internal static TokenizerLoadException Error(string file, string field, string problem, string fix, Exception? inner = null) =>
        new(file, field, problem, fix, inner);

    private static JsonDocument ParseJson(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Error(path, "(file)", $"cannot be read: {ex.Message}", "check that the file exists and is readable.", ex);
        }

        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = 256 });
        }
        catch (JsonException ex)
        {
            throw Error(path, "(json)", $"is not valid JSON (line {ex.LineNumber + 1}, byte {ex.BytePositionInLine}): {ex.Message}", RedownloadFix, ex);
        }
    }

    private static Dictionary<string, int> ReadVocab(string path, JsonElement element, string field)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in element.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out var id) || id < 0)
            {
                throw Error(path, $"{field}[\"{p.Name}\"]", "token ids must be non-negative integers.", RedownloadFix);
            }

            vocab[p.Name] = id;
        }

        return vocab;
    }

    private static (string, string, string) SplitMergeLine(string path, string field, string line)
    {
        var parts = line.Split(' ');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            throw Error(path, field, $"merge \"{line}\" must be two tokens separated by one space.", RedownloadFix);
        }

        return (parts[0], parts[1], field);
    }

    private static AddedTokenSpec ReadAddedToken(string path, string field, JsonElement t, int? fixedId)
    {
        if (t.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, field, "an added token must be an object with id, content and special.", RedownloadFix);
        }

        int id;
        if (fixedId is int known)
        {
            id = known;
        }
        else if (!t.TryGetProperty("id", out var idElement) || !idElement.TryGetInt32(out id) || id < 0)
        {
            throw Error(path, field + ".id", "missing or not a non-negative integer.", RedownloadFix);
        }

        if (!t.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String || content.GetString()!.Length == 0)
        {
            throw Error(path, field + ".content", "missing or empty.", RedownloadFix);
        }

        return new AddedTokenSpec(id, content.GetString()!, IsTrue(t, "special"), IsTrue(t, "lstrip"), IsTrue(t, "rstrip"));
    }

    private static bool IsTrue(JsonElement obj, string name) => obj.TryGetProperty(name, out var e) && e.ValueKind == JsonValueKind.True;

    private static bool ReadNormalizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null)
        {
            return false;
        }

        var type = OptionalString(path, n, "type", "normalizer.type");
        if (type == "NFC")
        {
            return true;
        }

        if (type == "Sequence" && n.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            var nfc = false;
            var i = 0;
            foreach (var item in list.EnumerateArray())
            {
                var t = OptionalString(path, item, "type", $"normalizer.normalizers[{i}].type");
                if (t != "NFC")
                {
                    throw UnsupportedNormalizer(path, $"normalizer.normalizers[{i}].type", t);
                }

                nfc = true;
                i++;
            }

            return nfc;
        }

        throw UnsupportedNormalizer(path, "normalizer.type", type);
    }

    private static TokenizerLoadException UnsupportedNormalizer(string path, string field, string? type) =>
        Error(path, field, $"normalizer '{type}' is not supported; byte-level BPE tokenizers use none or NFC.",
            "use a byte-level BPE tokenizer (Llama-3, Qwen2, GPT-2 families).");

    private static List<PreTokenizer.Step> ReadPreTokenizerSteps(string path, JsonElement element, string field)
    {
        var type = OptionalString(path, element, "type", field + ".type");
        switch (type)
        {
            case "Sequence":
            {
                if (!element.TryGetProperty("pretokenizers", out var list) || list.ValueKind != JsonValueKind.Array)
                {
                    throw Error(path, field + ".pretokenizers", "a Sequence needs a pretokenizers array.", RedownloadFix);
                }

                var steps = new List<PreTokenizer.Step>();
                var i = 0;
                foreach (var item in list.EnumerateArray())
                {
                    steps.AddRange(ReadPreTokenizerSteps(path, item, $"{field}.pretokenizers[{i}]"));
                    i++;
                }

                return steps;
            }

            case "Split":
                return [ReadSplit(path, element, field)];
            case "ByteLevel":
            {
                var addPrefixSpace = element.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True;
                var useRegex = !element.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
                return [new PreTokenizer.ByteLevelStep(addPrefixSpace, useRegex)];
            }

            case "Digits":
            {
                var individual = element.TryGetProperty("individual_digits", out var ind) && ind.ValueKind == JsonValueKind.True;
                return [new PreTokenizer.DigitsStep(individual)];
            }

            default:
                throw Error(path, field + ".type", $"pre-tokenizer '{type}' is not supported; supported: Sequence, Split, ByteLevel, Digits.",
                    "use a byte-level BPE tokenizer (Llama-3, Qwen2, GPT-2 families).");
        }
    }

    private static PreTokenizer.SplitStep ReadSplit(string path, JsonElement element, string field)
    {
        if (!element.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
        {
            throw Error(path, field + ".pattern", "a Split needs a pattern object {\"Regex\": ...} or {\"String\": ...}.", RedownloadFix);
        }

        string regexText;
        string patternField;
        if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
        {
            regexText = r.GetString()!;
            patternField = field + ".pattern.Regex";
        }
        else if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String)
        {
            regexText = Regex.Escape(s.GetString()!);
            patternField = field + ".pattern.String";
        }
        else
        {
            throw Error(path, field + ".pattern", "the pattern needs a \"Regex\" or \"String\" value.", RedownloadFix);
        }

        if (element.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True)
        {
            throw Error(path, field + ".invert", "inverted Split patterns are not supported.", "use a tokenizer whose Split has invert: false.");
        }

        var behavior = OptionalString(path, element, "behavior", field + ".behavior") ?? "Isolated";
        if (behavior is not ("Isolated" or "Removed"))
        {
            throw Error(path, field + ".behavior", $"Split behavior '{behavior}' is not supported; supported: Isolated, Removed.",
                "use a tokenizer whose Split behavior is Isolated (Llama-3, Qwen2).");
        }

        Regex regex;
        try
        {
            regex = PreTokenizer.CompilePattern(regexText);
        }
        catch (ArgumentException ex)
        {
            throw Error(path, patternField, $"the regex cannot be compiled: {ex.Message}", RedownloadFix, ex);
        }

        return new PreTokenizer.SplitStep(regex, removeMatches: behavior == "Removed");
    }

    private static string? ReadTokenName(string path, JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (e.ValueKind == JsonValueKind.String)
        {
            return e.GetString();
        }

        // Older configs: {"__type": "AddedToken", "content": "<s>", ...}.
        if (e.ValueKind == JsonValueKind.Object && e.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String)
        {
            return c.GetString();
        }

        throw Error(path, name, "must be a token string or an object with 'content'.", RedownloadFix);
    }

    private static string? ReadNamedTemplate(string path, JsonElement list)
    {
        string? first = null;
        var i = 0;
        foreach (var item in list.EnumerateArray())
        {
            var name = OptionalString(path, item, "name", $"chat_template[{i}].name");
            var template = OptionalString(path, item, "template", $"chat_template[{i}].template");
            first ??= template;
            if (name == "default")
            {
                return template;
            }

            i++;
        }

        return first;
    }

    private static string? OptionalString(string path, JsonElement obj, string name, string field)
    {
        if (obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (e.ValueKind != JsonValueKind.String)
        {
            throw Error(path, field, "must be a string.", RedownloadFix);
        }

        return e.GetString();
    }
}
