// Logits of every position of one prompt, in one forward pass over a KV store
// sized to the prompt: the numerics check behind `platform model logits`.
using Platform.Engine.KvCache;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine.Model;

public static class LogitsDump
{
    /// <param name="device">Where to run (null: cpu); off cpu the device-generic path runs and the logits are copied back.</param>
    public static float[] Compute(string modelDirectory, IReadOnlyList<int> tokens, ScalarType dtype, string weightDtype = WeightDtype.Auto, string quantization = Quantization.None, Device? device = null)
    {
        using var model = LlamaModel.Load(modelDirectory, dtype, weightDtype: weightDtype, quantization: quantization, device: device);
        var c = model.Config;
        foreach (int t in tokens)
            if (t < 0 || t >= c.VocabSize) throw new ArgumentException($"token id {t} is outside the vocabulary [0, {c.VocabSize}).");
        const int blockSize = 16;
        int blocks = (tokens.Count + blockSize - 1) / blockSize;
        using var kv = new PagedKvStore(c.NumLayers, blocks, blockSize, c.NumKvHeads, c.HeadDim, dtype, model.Device);
        var batch = new ForwardBatch();
        batch.AddSequence(tokens, 0, tokens.Count, Enumerable.Range(0, blocks).ToArray(), blockSize);
        batch.LogitRows.AddRange(Enumerable.Range(0, tokens.Count));
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return model.Forward(batch, kv).cpu().data<float>().ToArray();
    }
}
