// Reading a step's logits off the device. On cpu the logits are read in place
// as before. Off cpu, when every row of the step is greedy and needs nothing
// from its logits on the host (no logprobs, logit bias, penalties or returned
// logits), the argmax runs on the device and the only device → host copy of the
// step is the sampled ids (B int32s). Otherwise the rows are copied to the host
// and sampled there as on cpu (Sampler: temperature, min-p, top-k, top-p with
// the counter-based stream), so seeded sampling gives the same tokens on every
// device for the same logits.
using Platform.Engine.Sampling;
using Platform.Engine.Scheduling;
using TorchSharp;
using static TorchSharp.torch;

namespace Platform.Engine;

public sealed partial class LlmEngine
{
    /// <summary>
    /// The model's forward path (benchmarks compare generic and native on cpu). Set it between steps only, with no
    /// request in flight: the engine thread reads it at each step.
    /// </summary>
    internal Model.ForwardPath ForwardPath
    {
        get => _model.ForwardPath;
        set => _model.ForwardPath = value;
    }

    /// <summary>The step's logits on the host, or (off cpu, all rows greedy) the tokens sampled on the device and no logits.</summary>
    private static (float[] Logits, int[]? Tokens) ReadStepOutput(Tensor output, List<EngineRequest> sampling)
    {
        if (sampling.Count == 0) return ([], null);
        if (output.device_type == DeviceType.CPU)
            return (System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(output.contiguous().bytes).ToArray(), null);
        if (sampling.TrueForAll(GreedyOnDevice))
        {
            using var ids = output.argmax(1).to_type(ScalarType.Int32).cpu();   // the step's one device → host copy
            return ([], ids.data<int>().ToArray());
        }
        using var host = output.cpu();
        return (System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(host.contiguous().bytes).ToArray(), null);
    }

    /// <summary>A row whose token is its argmax and whose logits nothing on the host reads.</summary>
    private static bool GreedyOnDevice(EngineRequest r)
    {
        var p = r.Sampling;
        return (p.Temperature <= 0 || p.TopK == 1) && p.Logprobs is null && p.LogitBias.Count == 0 && !r.ReturnLogits
            && !PenaltyState.Needed(p.PresencePenalty, p.FrequencyPenalty, p.RepetitionPenalty);
    }
}
