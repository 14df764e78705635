// Reads a Hugging Face Llama-family checkpoint's tensors as fp32, whatever width they are stored in
// (F32, F16, BF16), for the peer exporters (GGUF, llama2.c). Widening is exact, so an export from a
// bf16 checkpoint carries the very values the engine computes with.
using System.Buffers.Binary;
using Platform.Core.Models;
using Platform.Core.Safetensors;

namespace Platform.Bench.Peers;

internal sealed class CheckpointReader : IDisposable
{
    private readonly ModelWeights _weights;

    public ModelConfig Config { get; }
    public string Directory { get; }

    public CheckpointReader(string modelDirectory)
    {
        Directory = modelDirectory;
        Config = ModelConfig.Load(modelDirectory);
        if (Config.AttentionBias || Config.HasSlidingWindow)
            throw new ArgumentException($"{modelDirectory}: the peer exports take plain Llama models (no attention bias, no sliding window)");
        _weights = ModelWeights.Open(modelDirectory);
    }

    /// <summary>The tensor's values in fp32, row-major as stored.</summary>
    public float[] Read(string name)
    {
        var (file, info) = _weights.Get(name);
        var bytes = file.GetBytes(info);
        var values = new float[info.ElementCount];
        switch (info.Dtype)
        {
            case SafetensorsDtype.F32:
                for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(i * 4)..]);
                break;
            case SafetensorsDtype.F16:
                for (int i = 0; i < values.Length; i++) values[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(i * 2)..]);
                break;
            case SafetensorsDtype.BF16:
                for (int i = 0; i < values.Length; i++) values[i] = DtypeConversions.BFloat16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(i * 2)..]));
                break;
            default:
                throw new ArgumentException($"{name} is {info.Dtype}; the exporters read F32, F16 or BF16 weights");
        }
        return values;
    }

    /// <summary>The output head: lm_head, or the embedding when the two are tied.</summary>
    public string OutputHeadName => Config.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";

    public void Dispose() => _weights.Dispose();
}
