// Base type for every "this model directory cannot be used" error (config, weights, tokenizer).
// Callers catch this one type to turn a bad model into a clear message instead of a crash.
namespace Platform.Core;

public class ModelLoadException : Exception
{
    public ModelLoadException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}
