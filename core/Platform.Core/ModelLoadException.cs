// The one exception type for "this model directory cannot be used": a missing
// or corrupt file, a field that does not fit, an unsupported architecture.
// Messages name the file and the tensor or field, and say how to fix it, so a
// user never has to read a native stack trace from deep inside TorchSharp.
namespace Platform.Core;

public class ModelLoadException : Exception
{
    public ModelLoadException(string message, Exception? inner = null) : base(message, inner) { }
}
