// Cross-check against an independent implementation: Microsoft.ML.Tokenizers' byte-level
// BpeTokenizer, given the same vocabulary, merges and split regex, must produce the same ids.
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Platform.Core.Tokenization;
using OurPreTokenizer = Platform.Core.Tokenization.PreTokenizer;

namespace Platform.Core.Tests.Tokenization;

public sealed class CrossCheckTests
{
    [Theory]
    [InlineData("chatml", OurPreTokenizer.Qwen2Pattern)]
    [InlineData("llama3", OurPreTokenizer.Llama3Pattern)]
    public void Ids_match_Microsoft_ML_Tokenizers_bpe(string family, string pattern)
    {
        using var dir = new TempDirectory();
        SyntheticTokenizer.Write(dir.Path, 4096, family);
        var ours = HfTokenizer.Load(dir.Path);

        using var doc = JsonDocument.Parse(File.ReadAllBytes(dir.File("tokenizer.json")));
        var model = doc.RootElement.GetProperty("model");
        var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32())).ToList();
        var merges = model.GetProperty("merges").EnumerateArray().Select(m => m[0].GetString() + " " + m[1].GetString()).ToList();
        var regex = new Regex(OurPreTokenizer.MakeSurrogateAware(pattern), RegexOptions.CultureInvariant);
        var reference = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(regex, null),
        });

        string[] texts =
        [
            "The river town wakes before the sun; Mrs. Alvarez asks what you think.",
            "Unseen words: tokenizer, quixotic, zephyr, juxtaposition, Mississippi!!",
            "Numbers 1234567890 and 3.14159, -42, 1e10.",
            "日本語のテキスト 中文 한국어 😀👍🏽 👨‍👩‍👧 café naïve",
            "  spaces   and\t\ttabs\n\n\nlines \r\n end  ",
            "they'RE HERE, it'S fine, I'll go",
            "Supercalifragilisticexpialidociousriverfishermanferrymantownbakersbread and 1234567",
        ];
        foreach (var text in texts)
        {
            Assert.Equal(reference.EncodeToIds(text), ours.Encode(text));
        }
    }
}
