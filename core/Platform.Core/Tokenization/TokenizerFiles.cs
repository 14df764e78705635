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
    Normalizer Normalizer,
    string? UnknownToken,
    bool IgnoreMerges)
{
    /// <summary>Byte-level BPE (a ByteLevel pre-tokenizer or decoder); false for SentencePiece-style character BPE.</summary>
    public bool ByteLevel { get; init; } = true;

    /// <summary>Characters missing from the vocabulary become &lt;0xXX&gt; byte tokens.</summary>
    public bool ByteFallback { get; init; }

    public bool FuseUnknown { get; init; }

    /// <summary>Decoder: literal replacements applied to token text (e.g. '▁' → ' '), in order.</summary>
    public IReadOnlyList<(string From, string To)> DecodeReplacements { get; init; } = [];

    /// <summary>Metaspace decoder: the first decoded token loses every replacement character (Hugging Face's quirk), not just one space.</summary>
    public string? DecodeFirstTokenDrops { get; init; }

    /// <summary>Decoder: &lt;0xXX&gt; tokens decode to their byte (a ByteFallback decoder); otherwise they stay literal text.</summary>
    public bool DecodeByteFallback { get; init; }

    /// <summary>Decoder: how many leading spaces a decoded text loses (Strip, or Metaspace's prefix space).</summary>
    public int DecodeStripLeadingSpaces { get; init; }

    /// <summary>The token ids tokenizer.json's post_processor puts around a single sequence; null when it has none.</summary>
    public (List<int> Prefix, List<int> Suffix)? PostProcessor { get; init; }
}

internal sealed record TokenizerConfigSpec(
    string? SourceFile,
    string? BosToken,
    string? EosToken,
    bool? AddBosToken,
    string? ChatTemplate,
    List<AddedTokenSpec> AddedTokens)
{
    public bool? AddEosToken { get; init; }

    /// <summary>unk_token and pad_token, for templates that print them.</summary>
    public Dictionary<string, string> OtherSpecialTokens { get; init; } = [];

    /// <summary>Where ChatTemplate came from (tokenizer_config.json, chat_template.jinja or chat_template.json).</summary>
    public string? ChatTemplateSource { get; init; }
}

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
            throw Error(path, "model.type", $"model type '{type}' is not supported; only BPE (type \"BPE\") is.",
                "use a model whose tokenizer is BPE (Llama-2/3, Mistral, Gemma, Qwen2, DeepSeek families).");
        }

        var byteFallback = IsTrue(model, "byte_fallback");
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

        var normalizer = ReadNormalizer(path, root);
        var hasPre = root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind != JsonValueKind.Null;
        var steps = hasPre ? ReadPreTokenizerSteps(path, pre, "pre_tokenizer") : [];
        var decoder = ReadDecoder(path, root);
        // Byte-level when a ByteLevel pre-tokenizer or decoder says so; a bare file (no pre_tokenizer, no
        // decoder, no byte_fallback) is GPT-2 style, as vocab.json + merges.txt are.
        var byteLevel = steps.Any(s => s is PreTokenizer.ByteLevelStep) || decoder.ByteLevel
                        || (!hasPre && !decoder.Present && !byteFallback);
        var preTokenizer = !hasPre && byteLevel ? PreTokenizer.Gpt2Default() : new PreTokenizer(steps);
        var unk = OptionalString(path, model, "unk_token", "model.unk_token");
        var ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        return new TokenizerSpec(path, vocab, merges, added, preTokenizer, normalizer, unk, ignoreMerges)
        {
            ByteLevel = byteLevel,
            ByteFallback = byteFallback,
            FuseUnknown = IsTrue(model, "fuse_unk"),
            DecodeReplacements = decoder.Replacements,
            DecodeStripLeadingSpaces = decoder.StripLeadingSpaces,
            DecodeByteFallback = decoder.ByteFallback,
            DecodeFirstTokenDrops = decoder.FirstTokenDrops,
            PostProcessor = ReadPostProcessor(path, root),
        };
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

        return new TokenizerSpec(vocabPath, vocab, merges, [], PreTokenizer.Gpt2Default(), new Normalizer([]), UnknownToken: null, IgnoreMerges: false);
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
        var addBos = ReadOptionalBool(path, root, "add_bos_token");

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

        var others = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in new[] { "unk_token", "pad_token" })
        {
            if (ReadTokenName(path, root, name) is { } value)
            {
                others[name] = value;
            }
        }

        return new TokenizerConfigSpec(path, bos, eos, addBos, template, added)
        {
            AddEosToken = ReadOptionalBool(path, root, "add_eos_token"),
            OtherSpecialTokens = others,
            ChatTemplateSource = template is null ? null : "tokenizer_config.json",
        };
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

    private static bool? ReadOptionalBool(string path, JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return e.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error(path, name, "must be true or false.", "set it to true or false."),
        };
    }

    private static Normalizer ReadNormalizer(string path, JsonElement root)
    {
        var steps = new List<Normalizer.Step>();
        if (root.TryGetProperty("normalizer", out var n) && n.ValueKind != JsonValueKind.Null)
        {
            ReadNormalizerSteps(path, n, "normalizer", steps);
        }

        return new Normalizer(steps);
    }

    private static void ReadNormalizerSteps(string path, JsonElement n, string field, List<Normalizer.Step> steps)
    {
        var type = OptionalString(path, n, "type", field + ".type");
        switch (type)
        {
            case "Sequence":
                if (!n.TryGetProperty("normalizers", out var list) || list.ValueKind != JsonValueKind.Array)
                {
                    throw Error(path, field + ".normalizers", "a Sequence needs a normalizers array.", RedownloadFix);
                }

                var i = 0;
                foreach (var item in list.EnumerateArray())
                {
                    ReadNormalizerSteps(path, item, $"{field}.normalizers[{i}]", steps);
                    i++;
                }

                return;
            case "NFC":
                steps.Add(new Normalizer.UnicodeStep(System.Text.NormalizationForm.FormC));
                return;
            case "NFD":
                steps.Add(new Normalizer.UnicodeStep(System.Text.NormalizationForm.FormD));
                return;
            case "NFKC":
                steps.Add(new Normalizer.UnicodeStep(System.Text.NormalizationForm.FormKC));
                return;
            case "NFKD":
                steps.Add(new Normalizer.UnicodeStep(System.Text.NormalizationForm.FormKD));
                return;
            case "Lowercase":
                steps.Add(new Normalizer.LowercaseStep());
                return;
            case "Strip":
                steps.Add(new Normalizer.StripStep(IsTrue(n, "strip_left"), IsTrue(n, "strip_right")));
                return;
            case "Prepend":
                steps.Add(new Normalizer.PrependStep(OptionalString(path, n, "prepend", field + ".prepend")
                    ?? throw Error(path, field + ".prepend", "a Prepend needs a prepend string.", RedownloadFix)));
                return;
            case "Replace":
            {
                var (literal, regex) = ReadPattern(path, n, field);
                var content = OptionalString(path, n, "content", field + ".content") ?? "";
                steps.Add(new Normalizer.ReplaceStep(literal, regex, content));
                return;
            }

            default:
                throw Error(path, field + ".type", $"normalizer '{type}' is not supported; supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace.",
                    "use a tokenizer of a supported family (Llama-2/3, Mistral, Gemma, Qwen2, DeepSeek).");
        }
    }

    /// <summary>A Replace pattern: {"String": literal} or {"Regex": pattern}.</summary>
    private static (string? Literal, Regex? Regex) ReadPattern(string path, JsonElement n, string field)
    {
        if (n.TryGetProperty("pattern", out var p) && p.ValueKind == JsonValueKind.Object)
        {
            if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String && s.GetString()!.Length > 0)
            {
                return (s.GetString(), null);
            }

            if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
            {
                try
                {
                    return (null, PreTokenizer.CompilePattern(r.GetString()!));
                }
                catch (ArgumentException ex)
                {
                    throw Error(path, field + ".pattern.Regex", $"the regex cannot be compiled: {ex.Message}", RedownloadFix, ex);
                }
            }
        }

        throw Error(path, field + ".pattern", "needs a pattern object {\"String\": ...} or {\"Regex\": ...}.", RedownloadFix);
    }

    private sealed record DecoderInfo(bool Present, bool ByteLevel, List<(string, string)> Replacements, int StripLeadingSpaces, bool ByteFallback = false, string? FirstTokenDrops = null);

    /// <summary>
    /// The decoders Hugging Face files use: ByteLevel; or Replace / ByteFallback / Fuse / Strip (Llama-2,
    /// Gemma); or Metaspace (older Mistral, TinyLlama). Byte fallback and fusing are implicit in how
    /// HfTokenizer decodes (bytes of all tokens, UTF-8 once), so only replacements and stripping are kept.
    /// </summary>
    private static DecoderInfo ReadDecoder(string path, JsonElement root)
    {
        var info = new DecoderInfo(false, false, [], 0);
        if (root.TryGetProperty("decoder", out var d) && d.ValueKind != JsonValueKind.Null)
        {
            info = info with { Present = true };
            ReadDecoderSteps(path, d, "decoder", ref info);
        }

        return info;
    }

    private static void ReadDecoderSteps(string path, JsonElement d, string field, ref DecoderInfo info)
    {
        var type = OptionalString(path, d, "type", field + ".type");
        switch (type)
        {
            case "Sequence":
                if (d.TryGetProperty("decoders", out var list) && list.ValueKind == JsonValueKind.Array)
                {
                    var i = 0;
                    foreach (var item in list.EnumerateArray())
                    {
                        ReadDecoderSteps(path, item, $"{field}.decoders[{i}]", ref info);
                        i++;
                    }
                }

                return;
            case "ByteLevel":
                info = info with { ByteLevel = true };
                return;
            case "ByteFallback":
                info = info with { ByteFallback = true };
                return;
            case "Fuse":
                return;
            case "Replace":
            {
                var (literal, _) = ReadPattern(path, d, field);
                if (literal is null)
                {
                    throw Error(path, field + ".pattern", "a Replace decoder with a regex is not supported.", "use a tokenizer whose decoder replaces a literal string.");
                }

                info.Replacements.Add((literal, OptionalString(path, d, "content", field + ".content") ?? ""));
                return;
            }

            case "Strip":
            {
                var content = OptionalString(path, d, "content", field + ".content");
                var start = d.TryGetProperty("start", out var st) && st.TryGetInt32(out var v) ? v : 0;
                if (content == " ")
                {
                    info = info with { StripLeadingSpaces = start };
                }

                return;
            }

            case "Metaspace":
            {
                var replacement = OptionalString(path, d, "replacement", field + ".replacement") ?? "\u2581";
                info.Replacements.Add((replacement, " "));
                var scheme = MetaspaceScheme(path, d, field);
                info = info with { FirstTokenDrops = scheme == "never" ? null : replacement };
                return;
            }

            default:
                throw Error(path, field + ".type", $"decoder '{type}' is not supported; supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace.",
                    "use a tokenizer of a supported family (Llama-2/3, Mistral, Gemma, Qwen2, DeepSeek).");
        }
    }

    private static string MetaspaceScheme(string path, JsonElement e, string field) =>
        OptionalString(path, e, "prepend_scheme", field + ".prepend_scheme")
        ?? (e.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");

    /// <summary>
    /// The ids a post_processor puts around one sequence: TemplateProcessing's "single" (Llama-2/3.1, Gemma
    /// add BOS this way), Roberta/Bert's cls/sep; ByteLevel adds none. Null when there is no post_processor.
    /// </summary>
    private static (List<int>, List<int>)? ReadPostProcessor(string path, JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var p) || p.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        var prefix = new List<int>();
        var suffix = new List<int>();
        ReadPostProcessorSteps(path, p, "post_processor", prefix, suffix);
        return (prefix, suffix);
    }

    private static void ReadPostProcessorSteps(string path, JsonElement p, string field, List<int> prefix, List<int> suffix)
    {
        var type = OptionalString(path, p, "type", field + ".type");
        switch (type)
        {
            case "Sequence":
                if (p.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array)
                {
                    var i = 0;
                    foreach (var item in list.EnumerateArray())
                    {
                        ReadPostProcessorSteps(path, item, $"{field}.processors[{i}]", prefix, suffix);
                        i++;
                    }
                }

                return;
            case "ByteLevel":
                return;
            case "TemplateProcessing":
            {
                if (!p.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
                {
                    throw Error(path, field + ".single", "a TemplateProcessing needs a single array.", RedownloadFix);
                }

                var seenSequence = false;
                var i = 0;
                foreach (var piece in single.EnumerateArray())
                {
                    if (piece.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                    }
                    else if (piece.TryGetProperty("SpecialToken", out var st) && OptionalString(path, st, "id", $"{field}.single[{i}].SpecialToken.id") is { } name)
                    {
                        (seenSequence ? suffix : prefix).AddRange(SpecialTokenIds(path, p, field, name));
                    }

                    i++;
                }

                return;
            }

            case "RobertaProcessing" or "BertProcessing":
                prefix.Add(PairId(path, p, field, "cls"));
                suffix.Add(PairId(path, p, field, "sep"));
                return;
            default:
                throw Error(path, field + ".type", $"post-processor '{type}' is not supported; supported: Sequence, ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing.",
                    "use a tokenizer of a supported family (Llama-2/3, Mistral, Gemma, Qwen2, DeepSeek).");
        }
    }

    private static List<int> SpecialTokenIds(string path, JsonElement p, string field, string name)
    {
        if (p.TryGetProperty("special_tokens", out var map) && map.TryGetProperty(name, out var entry)
            && entry.TryGetProperty("ids", out var ids) && ids.ValueKind == JsonValueKind.Array)
        {
            return ids.EnumerateArray().Select(x => x.TryGetInt32(out var id) ? id
                : throw Error(path, $"{field}.special_tokens[\"{name}\"].ids", "ids must be integers.", RedownloadFix)).ToList();
        }

        throw Error(path, $"{field}.special_tokens", $"the template uses '{name}', which special_tokens does not define.", RedownloadFix);
    }

    private static int PairId(string path, JsonElement p, string field, string name) =>
        p.TryGetProperty(name, out var pair) && pair.ValueKind == JsonValueKind.Array && pair.GetArrayLength() == 2 && pair[1].TryGetInt32(out var id)
            ? id
            : throw Error(path, $"{field}.{name}", "must be [token, id].", RedownloadFix);

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

            case "Metaspace":
            {
                var replacement = OptionalString(path, element, "replacement", field + ".replacement") ?? "\u2581";
                var split = !element.TryGetProperty("split", out var sp) || sp.ValueKind != JsonValueKind.False;
                return [new PreTokenizer.MetaspaceStep(replacement[0], MetaspaceScheme(path, element, field), split)];
            }

            case "Digits":
            {
                var individual = element.TryGetProperty("individual_digits", out var ind) && ind.ValueKind == JsonValueKind.True;
                return [new PreTokenizer.DigitsStep(individual)];
            }

            default:
                throw Error(path, field + ".type", $"pre-tokenizer '{type}' is not supported; supported: Sequence, Split, ByteLevel, Digits, Metaspace.",
                    "use a tokenizer of a supported family (Llama-2/3, Mistral, Gemma, Qwen2, DeepSeek).");
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
        if (!Enum.TryParse<PreTokenizer.SplitBehavior>(behavior, out var splitBehavior))
        {
            throw Error(path, field + ".behavior", $"Split behavior '{behavior}' is not supported; supported: Isolated, Removed, MergedWithPrevious, MergedWithNext.",
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

        return new PreTokenizer.SplitStep(regex, splitBehavior);
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
