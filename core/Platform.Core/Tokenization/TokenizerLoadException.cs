// A tokenizer file that cannot be used: names the file and the field, and says how to fix it.
namespace Platform.Core.Tokenization;

public sealed class TokenizerLoadException : ModelLoadException
{
    public TokenizerLoadException(string filePath, string field, string problem, string fix, Exception? inner = null)
        : base($"Tokenizer file '{filePath}', field '{field}': {problem} Fix: {fix}", inner)
    {
        FilePath = filePath;
        Field = field;
    }

    /// <summary>The file that could not be used.</summary>
    public string FilePath { get; }

    /// <summary>The JSON field (or line) inside the file that is wrong, e.g. "model.merges[12]".</summary>
    public string Field { get; }
}
