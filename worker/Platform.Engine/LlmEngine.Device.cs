// Reading a step's logits off the device. On cpu the logits are read in place
// as before. Off cpu, when no row needs its logits on the host (logprobs, logit
// bias, penalties or returned logits), the rows are sampled where the logits are
// (DeviceSampler: argmax for greedy rows; temperature, min-p, top-k and top-p
// with the same counter-based uniform as the host Sampler, so a seeded request
// draws the same tokens on every device) and the only device → host copy of the
// step is the sampled ids (B int32s). Otherwise the rows are copied to the host
// and sampled there as on cpu.
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

    /// <summary>
    /// Sample on the device even when it is the cpu (tests hold the device sampler to the host one through the engine).
    /// Set it between steps only.
    /// </summary>
    internal bool SampleOnDevice { get; set; }

    /// <summary>The step's logits on the host, or (off cpu, no row needing its logits) the tokens sampled on the device and no logits.</summary>
    private (float[] Logits, int[]? Tokens) ReadStepOutput(Tensor output, List<EngineRequest> sampling)
    {
        if (sampling.Count == 0) return ([], null);
        bool onDevice = output.device_type != DeviceType.CPU || SampleOnDevice;
        if (onDevice && sampling.TrueForAll(SamplesOnDevice))
        {
            var rows = sampling.ConvertAll(r => new DeviceSampler.Row(r.Sampling.Temperature, r.Sampling.TopK, r.Sampling.TopP, r.Sampling.MinP,
                r.Seed, r.OutputLength));
            return ([], DeviceSampler.Sample(output, rows));   // the step's one device → host copy
        }
        if (output.device_type == DeviceType.CPU)
            return (System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(output.contiguous().bytes).ToArray(), null);
        using var host = output.cpu();
        return (System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(host.contiguous().bytes).ToArray(), null);
    }

    /// <summary>A row that nothing on the host needs the logits of: its token can be drawn where the logits are.</summary>
    private static bool SamplesOnDevice(EngineRequest r)
    {
        var p = r.Sampling;
        return p.Logprobs is null && p.LogitBias.Count == 0 && !r.ReturnLogits
            && !PenaltyState.Needed(p.PresencePenalty, p.FrequencyPenalty, p.RepetitionPenalty);
    }
}
