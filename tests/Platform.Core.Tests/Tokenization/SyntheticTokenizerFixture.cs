// Writes the two synthetic tokenizers once per test class (training takes a moment) and loads them.
using Platform.Core.Tokenization;

namespace Platform.Core.Tests.Tokenization;

public sealed class SyntheticTokenizerFixture : IDisposable
{
    private readonly TempDirectory _llama3Dir = new();
    private readonly TempDirectory _chatMlDir = new();

    public SyntheticTokenizerFixture()
    {
        Llama3Info = SyntheticTokenizer.Write(_llama3Dir.Path, 2048, "llama3");
        ChatMlInfo = SyntheticTokenizer.Write(_chatMlDir.Path, 1024, "chatml");
        Llama3 = HfTokenizer.Load(_llama3Dir.Path);
        ChatMl = HfTokenizer.Load(_chatMlDir.Path);
    }

    public SyntheticTokenizerInfo Llama3Info { get; }

    public SyntheticTokenizerInfo ChatMlInfo { get; }

    public HfTokenizer Llama3 { get; }

    public HfTokenizer ChatMl { get; }

    public string Llama3Dir => _llama3Dir.Path;

    public HfTokenizer Get(string family) => family == "llama3" ? Llama3 : ChatMl;

    public void Dispose()
    {
        _llama3Dir.Dispose();
        _chatMlDir.Dispose();
    }
}
