// RoPE frequency computation for every scaling the HuggingFace Llama family uses
// (none, linear, dynamic NTK, llama3, yarn). Kept in Core (TorchSharp-free) so the
// engine and the tests' naive reference compute the very same frequencies.
namespace Platform.Core.Models;

public enum RopeScalingType { None, Linear, Dynamic, Llama3, Yarn }

public sealed record RopeScaling(
    RopeScalingType Type,
    double Factor = 1.0,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int? OriginalMaxPositionEmbeddings = null,
    double BetaFast = 32.0,
    double BetaSlow = 1.0,
    double? AttentionFactor = null,
    double? Mscale = null,
    double? MscaleAllDim = null)
{
    public static readonly RopeScaling NoScaling = new(RopeScalingType.None);
}

/// <summary>Inverse frequencies and the attention (cos/sin) scale for one model.</summary>
public sealed record RopeFrequencies(double[] InverseFrequencies, double AttentionScale)
{
    /// <summary>
    /// Computes the per-pair inverse frequencies. Dynamic NTK is applied statically at
    /// the model's extended length (max positions × factor), as vLLM does: a base that
    /// changed with the sequence length would make cached keys disagree with new ones.
    /// </summary>
    public static RopeFrequencies Compute(int rotaryDim, double theta, RopeScaling scaling, int maxPositionEmbeddings)
    {
        int half = rotaryDim / 2;
        var inv = new double[half];
        double Base(double b, int i) => 1.0 / Math.Pow(b, 2.0 * i / rotaryDim);
        double attentionScale = 1.0;
        switch (scaling.Type)
        {
            case RopeScalingType.None:
                for (int i = 0; i < half; i++) inv[i] = Base(theta, i);
                break;
            case RopeScalingType.Linear:
                for (int i = 0; i < half; i++) inv[i] = Base(theta, i) / scaling.Factor;
                break;
            case RopeScalingType.Dynamic:
            {
                int original = scaling.OriginalMaxPositionEmbeddings ?? maxPositionEmbeddings;
                double maxLen = original * scaling.Factor;
                double b = theta * Math.Pow(scaling.Factor * maxLen / original - (scaling.Factor - 1), rotaryDim / (rotaryDim - 2.0));
                for (int i = 0; i < half; i++) inv[i] = Base(b, i);
                break;
            }
            case RopeScalingType.Llama3:
            {
                double original = scaling.OriginalMaxPositionEmbeddings ?? 8192;
                double lowWavelen = original / scaling.LowFreqFactor;
                double highWavelen = original / scaling.HighFreqFactor;
                for (int i = 0; i < half; i++)
                {
                    double f = Base(theta, i);
                    double wavelen = 2 * Math.PI / f;
                    if (wavelen < highWavelen) inv[i] = f;
                    else if (wavelen > lowWavelen) inv[i] = f / scaling.Factor;
                    else
                    {
                        double smooth = (original / wavelen - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
                        inv[i] = (1 - smooth) * f / scaling.Factor + smooth * f;
                    }
                }
                break;
            }
            case RopeScalingType.Yarn:
            {
                double original = scaling.OriginalMaxPositionEmbeddings ?? maxPositionEmbeddings;
                double CorrectionDim(double rotations) =>
                    rotaryDim * Math.Log(original / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
                double low = Math.Max(Math.Floor(CorrectionDim(scaling.BetaFast)), 0);
                double high = Math.Min(Math.Ceiling(CorrectionDim(scaling.BetaSlow)), rotaryDim - 1);
                if (low == high) high += 0.001;
                for (int i = 0; i < half; i++)
                {
                    double extrapolation = Base(theta, i);
                    double interpolation = extrapolation / scaling.Factor;
                    double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
                    double extrapolationWeight = 1 - ramp;
                    inv[i] = interpolation * (1 - extrapolationWeight) + extrapolation * extrapolationWeight;
                }
                attentionScale = scaling.AttentionFactor ?? YarnMscale(scaling);
                break;
            }
        }
        return new RopeFrequencies(inv, attentionScale);
    }

    private static double YarnMscale(RopeScaling s)
    {
        static double Get(double scale, double m) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
        if (s.Mscale is { } m && s.MscaleAllDim is { } all) return Get(s.Factor, m) / Get(s.Factor, all);
        return Get(s.Factor, 1.0);
    }
}
