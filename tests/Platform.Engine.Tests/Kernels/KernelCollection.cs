// The kernel tests flip process-wide knobs (KernelThreads.Count, Gemv.ForcePortable, chunk
// sizes); one xunit collection keeps those test classes from running in parallel with each other.
namespace Platform.Engine.Tests.Kernels;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KernelCollection
{
    public const string Name = "Kernels";
}
