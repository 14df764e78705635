// A Hugging Face BPE tokenizer loaded from a model directory: byte-level (Llama-3, Qwen2, DeepSeek,
// GPT-2) or SentencePiece-style with byte_fallback and '▁' for spaces (Llama-2, Mistral, TinyLlama,
// Gemma). Encoding: added/special tokens are cut out of the text first (leftmost, longest match),
// each stretch between them is normalized, pre-tokenized and BPE-encoded piece by piece;
// EncodeWithSpecialTokens adds what the post-processor adds (BOS for Llama-2/3.1, Gemma). Decoding
// maps ids back to bytes (byte-level symbols, <0xXX> byte-fallback tokens, '▁' as a space; added
// tokens stand for their literal text) and decodes UTF-8 once at the end, so byte pieces of one
// character merge back into it.
// Thread-safe after Load: all state is read-only except the BPE word cache, which is concurrent.
using System.Text;
using System.Text.RegularExpressions;

namespace Platform.Core.Tokenization;

public sealed class HfTokenizer
{
    private const string AddedGroup = "added";

    // Ids index dense arrays; real vocabularies are below 300K, so 16M only rejects corrupt files.
    private const int MaxTokenId = 1 << 24;

    private readonly BpeModel _model;
    private readonly PreTokenizer _preTokenizer;
    private readonly Normalizer _normalizer;
    private readonly int _decodeStripLeadingSpaces;
    private readonly string? _decodeFirstTokenDrops;
    private readonly IReadOnlyList<(string From, string To)> _decodeReplacements;
    private readonly int[] _specialPrefix;
    private readonly int[] _specialSuffix;
    private readonly Regex? _addedTokenRegex;

    // Without lstrip/rstrip tokens, added tokens are found by a scan over candidates keyed by their first
    // character (longest first): the regex alternation of Gemma's 6,415 added tokens costs ~4 µs per character.
    private readonly Dictionary<char, string[]>? _addedByFirstChar;
    private readonly Dictionary<string, int> _addedByContent;
    private readonly Dictionary<string, int> _tokenToId;
    private readonly string?[] _idToToken;
    private readonly byte[]?[] _idToBytes;
    private readonly bool[] _isSpecial;
    private readonly bool[] _isAdded;

    private HfTokenizer(TokenizerSpec spec, TokenizerConfigSpec? config)
    {
        var file = spec.SourceFile;
        _preTokenizer = spec.PreTokenizer;
        _normalizer = spec.Normalizer;
        _decodeStripLeadingSpaces = spec.DecodeStripLeadingSpaces;
        _decodeFirstTokenDrops = spec.DecodeFirstTokenDrops;
        _decodeReplacements = spec.DecodeReplacements;

        // Added tokens: tokenizer.json's list wins; tokenizer_config.json's added_tokens_decoder fills in
        // (the only source of special tokens for vocab.json + merges.txt).
        var added = new Dictionary<int, AddedTokenSpec>();
        foreach (var t in config?.AddedTokens ?? [])
        {
            added[t.Id] = t;
        }

        foreach (var t in spec.AddedTokens)
        {
            added[t.Id] = t;
        }

        var maxId = -1;
        foreach (var id in spec.Vocab.Values)
        {
            maxId = Math.Max(maxId, id);
        }

        foreach (var id in added.Keys)
        {
            maxId = Math.Max(maxId, id);
        }

        if (maxId >= MaxTokenId)
        {
            throw TokenizerFiles.Error(file, "model.vocab", $"token id {maxId} is implausibly large (limit {MaxTokenId - 1}).",
                "token ids must be dense from 0; re-download the tokenizer files from the model repository.");
        }

        VocabSize = maxId + 1;
        _idToToken = new string?[VocabSize];
        _idToBytes = new byte[VocabSize][];
        _isSpecial = new bool[VocabSize];
        _isAdded = new bool[VocabSize];
        _tokenToId = new Dictionary<string, int>(spec.Vocab, StringComparer.Ordinal);
        foreach (var (token, id) in spec.Vocab)
        {
            _idToToken[id] = token;
            _idToBytes[id] = spec.ByteLevel ? ByteLevel.DecodeToken(token) : CharacterTokenBytes(spec, token);
        }

        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in added.Values.OrderBy(t => t.Id))
        {
            _idToToken[t.Id] = t.Content;
            _idToBytes[t.Id] = Encoding.UTF8.GetBytes(ApplyDecodeReplacements(spec, t.Content));
            _isAdded[t.Id] = true;
            _isSpecial[t.Id] = t.Special;
            _addedByContent[t.Content] = t.Id;
            _tokenToId[t.Content] = t.Id;
        }

        // Special tokens named in tokenizer_config.json are special even when only listed in vocab.json.
        BosTokenId = ResolveConfigToken(config, config?.BosToken, "bos_token");
        EosTokenId = ResolveConfigToken(config, config?.EosToken, "eos_token");
        foreach (var id in new[] { BosTokenId, EosTokenId })
        {
            if (id is int special && !_isAdded[special])
            {
                _isAdded[special] = true;
                _isSpecial[special] = true;
                _addedByContent[_idToToken[special]!] = special;
            }
        }

        // What Hugging Face's tokenizer(text) adds. transformers' Llama and Gemma tokenizers rebuild the
        // post-processor from add_bos_token/add_eos_token when the config sets them (DeepSeek-V3's file has
        // a ByteLevel post-processor but add_bos_token: true); otherwise tokenizer.json's post_processor rules.
        if (config?.AddBosToken is not null || config?.AddEosToken is not null)
        {
            _specialPrefix = config?.AddBosToken == true && BosTokenId is int bos ? [bos] : [];
            _specialSuffix = config?.AddEosToken == true && EosTokenId is int eos ? [eos] : [];
        }
        else if (spec.PostProcessor is { } post)
        {
            _specialPrefix = [.. post.Prefix];
            _specialSuffix = [.. post.Suffix];
        }
        else
        {
            _specialPrefix = [];
            _specialSuffix = [];
        }

        AddBosByDefault = BosTokenId is int bosId && _specialPrefix.Contains(bosId);
        ChatTemplate = config?.ChatTemplate;
        ChatTemplateSource = config?.ChatTemplateSource;
        OtherSpecialTokens = config?.OtherSpecialTokens ?? [];
        var specs = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        foreach (var t in added.Values)
        {
            specs.TryAdd(t.Content, t);
        }

        var addedSpecs = _addedByContent.Select(kv => specs.GetValueOrDefault(kv.Key) ?? new AddedTokenSpec(kv.Value, kv.Key, Special: true)).ToList();
        if (addedSpecs.Any(t => t.LStrip || t.RStrip))
        {
            _addedTokenRegex = BuildAddedTokenRegex(addedSpecs);
        }
        else if (addedSpecs.Count > 0)
        {
            _addedByFirstChar = addedSpecs.GroupBy(t => t.Content[0])
                .ToDictionary(g => g.Key, g => g.Select(t => t.Content).OrderByDescending(c => c.Length).ThenBy(c => c, StringComparer.Ordinal).ToArray());
        }

        var byteIds = new int[256];
        for (var b = 0; b < 256; b++)
        {
            var byteToken = spec.ByteLevel ? ByteLevel.ByteToChar[b].ToString() : spec.ByteFallback ? $"<0x{b:X2}>" : null;
            byteIds[b] = byteToken is not null && spec.Vocab.TryGetValue(byteToken, out var id) ? id : -1;
        }

        int? unknownId = null;
        if (spec.UnknownToken is { } unk)
        {
            if (!_tokenToId.TryGetValue(unk, out var unkId))
            {
                throw TokenizerFiles.Error(file, "model.unk_token", $"unk_token '{unk}' is not in the vocabulary.",
                    "set unk_token to null or to a token that is in model.vocab.");
            }

            unknownId = unkId;
        }
        else if (spec.ByteLevel || spec.ByteFallback)
        {
            var missing = Array.IndexOf(byteIds, -1);
            if (missing >= 0)
            {
                throw TokenizerFiles.Error(file, spec.SourceFile.EndsWith("vocab.json", StringComparison.Ordinal) ? "(root)" : "model.vocab",
                    $"byte 0x{missing:X2} (token '{(spec.ByteLevel ? ByteLevel.ByteToChar[missing].ToString() : $"<0x{missing:X2}>")}') has no token, so some text could not be encoded.",
                    "a byte-level (or byte_fallback) BPE vocabulary must contain all 256 byte tokens; use the model's original tokenizer files.");
            }
        }

        var merges = new List<(int, int, int)>(spec.Merges.Count);
        foreach (var (left, right, field) in spec.Merges)
        {
            merges.Add((MergePart(file, field, left, spec.Vocab), MergePart(file, field, right, spec.Vocab), MergeResult(file, field, left + right, spec.Vocab)));
        }

        _model = new BpeModel(spec.Vocab, merges, byteIds, unknownId, spec.IgnoreMerges, spec.ByteLevel, spec.FuseUnknown);
    }

    /// <summary>Number of ids, including added tokens: every id is in [0, VocabSize).</summary>
    public int VocabSize { get; }

    public int? BosTokenId { get; }

    public int? EosTokenId { get; }

    /// <summary>True when EncodeWithSpecialTokens starts with BOS, as Hugging Face's tokenizer(text) does for this model.</summary>
    public bool AddBosByDefault { get; }

    /// <summary>The raw Jinja chat template from tokenizer_config.json, chat_template.jinja or chat_template.json, if any.</summary>
    public string? ChatTemplate { get; }

    /// <summary>The file ChatTemplate came from.</summary>
    public string? ChatTemplateSource { get; }

    /// <summary>tokenizer_config.json's unk_token and pad_token (name → token text), for chat templates.</summary>
    public IReadOnlyDictionary<string, string> OtherSpecialTokens { get; }

    /// <summary>
    /// Loads tokenizer.json (or vocab.json + merges.txt) and tokenizer_config.json from a model directory.
    /// </summary>
    /// <exception cref="TokenizerLoadException">A file is missing, unreadable, malformed or inconsistent.</exception>
    public static HfTokenizer Load(string modelDirectory)
    {
        if (!Directory.Exists(modelDirectory))
        {
            throw TokenizerFiles.Error(modelDirectory, "(directory)", "the model directory does not exist.",
                "pass the directory that holds tokenizer.json (or vocab.json and merges.txt).");
        }

        var tokenizerJson = Path.Combine(modelDirectory, "tokenizer.json");
        var vocabJson = Path.Combine(modelDirectory, "vocab.json");
        var mergesTxt = Path.Combine(modelDirectory, "merges.txt");
        TokenizerSpec spec;
        if (File.Exists(tokenizerJson))
        {
            spec = TokenizerFiles.ReadTokenizerJson(tokenizerJson);
        }
        else if (File.Exists(vocabJson) && File.Exists(mergesTxt))
        {
            spec = TokenizerFiles.ReadVocabAndMerges(vocabJson, mergesTxt);
        }
        else
        {
            throw TokenizerFiles.Error(tokenizerJson, "(file)", "no tokenizer found: neither tokenizer.json nor vocab.json + merges.txt exist.",
                "download tokenizer.json (and tokenizer_config.json) from the model repository into this directory.");
        }

        var configPath = Path.Combine(modelDirectory, "tokenizer_config.json");
        var config = File.Exists(configPath) ? TokenizerFiles.ReadConfig(configPath) : null;

        // Newer transformers versions save the template next to the config as chat_template.jinja
        // (older processors as chat_template.json: {"chat_template": "..."}).
        foreach (var name in new[] { "chat_template.jinja", "chat_template.json" })
        {
            var templatePath = Path.Combine(modelDirectory, name);
            if (config?.ChatTemplate is null && File.Exists(templatePath))
            {
                var template = name.EndsWith(".json", StringComparison.Ordinal) ? ChatTemplates.ReadTemplateFile(templatePath) : TokenizerFiles.ReadText(templatePath);
                config = config is null
                    ? new TokenizerConfigSpec(null, null, null, null, template, []) { ChatTemplateSource = name }
                    : config with { ChatTemplate = template, ChatTemplateSource = name };
            }
        }
        return new HfTokenizer(spec, config);
    }

    /// <summary>Encodes text; added/special tokens written literally in the text become their single ids.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos)
        {
            ids.Add(BosTokenId ?? throw new InvalidOperationException(
                "This tokenizer has no BOS token (tokenizer_config.json has no bos_token); encode with addBos: false."));
        }

        var last = 0;
        foreach (var (index, length, content) in FindAddedTokens(text))
        {
            if (index > last)
            {
                EncodeOrdinary(text[last..index], atStart: last == 0, ids);
            }

            ids.Add(_addedByContent[content]);
            last = index + length;
        }

        if (last < text.Length)
        {
            EncodeOrdinary(text[last..], atStart: last == 0, ids);
        }

        return ids;
    }

    /// <summary>Added tokens in the text, leftmost first and longest at a position; (start, length with stripped whitespace, token).</summary>
    private IEnumerable<(int Index, int Length, string Content)> FindAddedTokens(string text)
    {
        if (_addedTokenRegex is not null)
        {
            for (var m = _addedTokenRegex.Match(text); m.Success; m = m.NextMatch())
            {
                yield return (m.Index, m.Length, m.Groups[AddedGroup].Value);
            }

            yield break;
        }

        if (_addedByFirstChar is null)
        {
            yield break;
        }

        for (var i = 0; i < text.Length; i++)
        {
            if (!_addedByFirstChar.TryGetValue(text[i], out var candidates))
            {
                continue;
            }

            foreach (var c in candidates)
            {
                if (string.CompareOrdinal(text, i, c, 0, c.Length) == 0 && i + c.Length <= text.Length)
                {
                    yield return (i, c.Length, c);
                    i += c.Length - 1;
                    break;
                }
            }
        }
    }

    /// <summary>
    /// Encodes text as Hugging Face's tokenizer(text) does (add_special_tokens=True): with the tokens the
    /// post-processor puts around it, e.g. BOS for Llama-2, Llama-3.1 and Gemma, nothing for Qwen2.
    /// </summary>
    public IReadOnlyList<int> EncodeWithSpecialTokens(string text)
    {
        var body = Encode(text);
        if (_specialPrefix.Length == 0 && _specialSuffix.Length == 0)
        {
            return body;
        }

        var ids = new List<int>(_specialPrefix.Length + body.Count + _specialSuffix.Length);
        ids.AddRange(_specialPrefix);
        ids.AddRange(body);
        ids.AddRange(_specialSuffix);
        return ids;
    }

    /// <summary>Decodes ids to text; invalid UTF-8 (e.g. half an emoji) becomes U+FFFD as in Hugging Face.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        var first = true;
        foreach (var id in ids)
        {
            if (TokenBytes(id, skipSpecialTokens) is { } b)
            {
                if (first && _decodeFirstTokenDrops is { } drop && _idToToken[id] is { } token && !(b.Length == 1 && token.Length == 6))
                {
                    // Hugging Face's Metaspace decoder drops every '▁' of the first token, not only the prefix space.
                    var firstText = token.Replace(drop, "", StringComparison.Ordinal);
                    foreach (var (from, to) in _decodeReplacements)
                    {
                        firstText = firstText.Replace(from, to, StringComparison.Ordinal);
                    }

                    b = Encoding.UTF8.GetBytes(firstText);
                }

                bytes.AddRange(b);
                first = false;
            }
        }

        var text = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
        // The Strip decoder (SentencePiece files): the space that stands for the '▁' normalization prepended.
        var strip = 0;
        while (strip < _decodeStripLeadingSpaces && strip < text.Length && text[strip] == ' ')
        {
            strip++;
        }

        return strip == 0 ? text : text[strip..];
    }

    /// <summary>True for added tokens flagged special (and the BOS/EOS tokens named in tokenizer_config.json).</summary>
    public bool IsSpecial(int id) => id >= 0 && id < VocabSize && _isSpecial[id];

    /// <summary>The token string of an id (byte-level form for ordinary tokens), or null for an unused id.</summary>
    public string? IdToToken(int id) => id >= 0 && id < VocabSize ? _idToToken[id] : null;

    /// <summary>The id of a token string (byte-level form for ordinary tokens, literal text for added tokens).</summary>
    public int? TokenToId(string token) => _tokenToId.TryGetValue(token, out var id) ? id : null;

    public IncrementalDecoder CreateIncrementalDecoder(bool skipSpecialTokens = true) => new(this, skipSpecialTokens);

    /// <summary>
    /// The bytes one token stands for on its own (a special token's text included), as logprobs show it; null for an
    /// id this vocabulary does not use (a model's embedding table may be padded past the tokenizer's vocabulary).
    /// A byte-level token may be part of a UTF-8 character, so the bytes are not always text on their own.
    /// </summary>
    public byte[]? RawTokenBytes(int id) => id >= 0 && id < VocabSize ? _idToBytes[id]?.ToArray() : null;

    /// <summary>The bytes an id stands for, or null when it is skipped as special.</summary>
    internal byte[]? TokenBytes(int id, bool skipSpecialTokens)
    {
        if (id < 0 || id >= VocabSize || _idToBytes[id] is not { } bytes)
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is not in this tokenizer's vocabulary (size {VocabSize}).");
        }

        return skipSpecialTokens && _isSpecial[id] ? null : bytes;
    }

    private void EncodeOrdinary(string text, bool atStart, List<int> ids)
    {
        text = _normalizer.Apply(text);
        foreach (var piece in _preTokenizer.Split(text, atStart))
        {
            _model.EncodePiece(piece, ids);
        }
    }

    private int? ResolveConfigToken(TokenizerConfigSpec? config, string? token, string field)
    {
        if (token is null)
        {
            return null;
        }

        if (_tokenToId.TryGetValue(token, out var id))
        {
            return id;
        }

        throw TokenizerFiles.Error(config!.SourceFile!, field, $"token '{token}' is not in the vocabulary or the added tokens.",
            $"set {field} to a token of this tokenizer, or to null.");
    }

    /// <summary>A character-level token's bytes: &lt;0xXX&gt; is one byte under a ByteFallback decoder, otherwise its text with '▁' as a space.</summary>
    private static byte[] CharacterTokenBytes(TokenizerSpec spec, string token)
    {
        if (spec.DecodeByteFallback && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var b))
        {
            return [b];
        }

        return Encoding.UTF8.GetBytes(ApplyDecodeReplacements(spec, token));
    }

    private static string ApplyDecodeReplacements(TokenizerSpec spec, string text)
    {
        foreach (var (from, to) in spec.DecodeReplacements)
        {
            text = text.Replace(from, to, StringComparison.Ordinal);
        }

        return text;
    }

    private static int MergePart(string file, string field, string token, Dictionary<string, int> vocab)
    {
        if (vocab.TryGetValue(token, out var id))
        {
            return id;
        }

        throw TokenizerFiles.Error(file, field, $"the merge references token '{token}', which is not in the vocabulary.",
            "the vocabulary and merges come from different tokenizers; re-download both from the same model repository.");
    }

    private static int MergeResult(string file, string field, string merged, Dictionary<string, int> vocab)
    {
        if (vocab.TryGetValue(merged, out var id))
        {
            return id;
        }

        throw TokenizerFiles.Error(file, field, $"the merge produces '{merged}', which is not in the vocabulary.",
            "the vocabulary and merges come from different tokenizers; re-download both from the same model repository.");
    }

    private static Regex? BuildAddedTokenRegex(IEnumerable<AddedTokenSpec> tokens)
    {
        // Longest first so that alternation (leftmost, first alternative wins) gives leftmost-longest matches.
        // Every alternative captures the token itself in the same named group; lstrip/rstrip add \s* outside it.
        var alternatives = tokens
            .OrderByDescending(t => t.Content.Length).ThenBy(t => t.Content, StringComparer.Ordinal)
            .Select(t => (t.LStrip ? @"\s*" : "") + $"(?<{AddedGroup}>{Regex.Escape(t.Content)})" + (t.RStrip ? @"\s*" : ""))
            .ToList();
        return alternatives.Count == 0
            ? null
            : new Regex(string.Join('|', alternatives), RegexOptions.CultureInvariant | RegexOptions.Compiled);
    }
}
