// The device the engine computes on, as the worker's --device switch spells it:
// "cpu" (the default) or "cuda" / "cuda:N" (the N-th visible GPU, 0 when left
// out). Parsed here, once, so the worker, the CLI and the operator (which passes
// `--device cuda` when a workload asks for GPUs) agree on the names. Whether the
// device is really there is the engine's question (Platform.Engine.Torch.TorchDevices);
// this type only knows the spelling.
using System.Globalization;

namespace Platform.Core.Workers;

public sealed record ComputeDevice
{
    public const string CpuName = "cpu";
    public const string CudaName = "cuda";

    /// <summary>The accepted forms, as help texts and error messages list them.</summary>
    public const string Forms = "cpu|cuda[:N]";

    /// <summary>One line for CLI help.</summary>
    public const string HelpText = "Where the model, KV cache and sampling live: cpu (default) or cuda[:N] (needs the CUDA build and a GPU)";

    public static ComputeDevice Cpu { get; } = new(CpuName, null);

    /// <summary>"cpu" or "cuda".</summary>
    public string Kind { get; }
    /// <summary>The GPU ordinal given after the colon; null when none was given (cuda means cuda:0).</summary>
    public int? Index { get; }

    private ComputeDevice(string kind, int? index)
    {
        Kind = kind;
        Index = index;
    }

    public bool IsCpu => Kind == CpuName;

    /// <summary>A GPU: the first one unless <paramref name="index"/> names another.</summary>
    public static ComputeDevice Cuda(int? index = null)
    {
        if (index is < 0) throw new ArgumentOutOfRangeException(nameof(index), index, "a GPU ordinal is 0 or more");
        return new ComputeDevice(CudaName, index);
    }

    /// <summary>Null when <paramref name="text"/> names a device, else a message that lists the accepted forms.</summary>
    public static string? Validate(string? text) => TryParse(text, out _, out string? error) ? null : error;

    /// <summary>The device <paramref name="text"/> names; an ArgumentException with the accepted forms otherwise.</summary>
    public static ComputeDevice Parse(string? text) =>
        TryParse(text, out var device, out string? error) ? device : throw new ArgumentException(error);

    public static bool TryParse(string? text, out ComputeDevice device, out string? error)
    {
        device = Cpu;
        error = null;
        string value = (text ?? "").Trim().ToLowerInvariant();
        if (value == CpuName) return true;
        if (value == CudaName)
        {
            device = Cuda();
            return true;
        }
        if (value.StartsWith(CudaName + ":", StringComparison.Ordinal)
            && int.TryParse(value.AsSpan(CudaName.Length + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int index))
        {
            device = Cuda(index);
            return true;
        }
        error = $"unknown device '{text}'; use {Forms} (cpu is the default; cuda:N picks the N-th visible GPU).";
        return false;
    }

    public override string ToString() => Index is { } i ? $"{Kind}:{i.ToString(CultureInfo.InvariantCulture)}" : Kind;
}
