// Guards the tiering trap the kernels fell into twice (docs/engine.md, fifteenth and sixteenth sessions): a
// lane-generic kernel method (one type parameter constrained to a kernel interface such as IAttentionLanes<> or
// IRowLoader) that the JIT does not inline starts unoptimized, its lane helpers called rather than inlined, and a
// short decode ends before tiering recompiles it. `bench engine` 8K batch 8 fell from 760-886 to 408-586 tok/s
// that way, and `bench prefill`, which calls the kernel thousands of times, did not show it. Such a method either
// asks to be inlined into an optimized caller or is compiled optimized from its first call.
using System.Reflection;
using Platform.Engine.Kernels;

namespace Platform.Engine.Tests.Kernels;

public class KernelTieringTests
{
    [Fact]
    public void Every_lane_generic_kernel_method_is_inlined_or_optimized_from_its_first_call()
    {
        var methods = LaneGenericKernelMethods().ToList();
        Assert.True(methods.Count >= 20, $"found only {methods.Count} lane-generic kernel methods: the search no longer sees the kernels");

        var unoptimized = methods
            .Where(m => (m.MethodImplementationFlags & (MethodImplAttributes.AggressiveInlining | MethodImplAttributes.AggressiveOptimization)) == 0)
            .Select(m => $"{m.DeclaringType!.Name}.{m.Name}")
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.True(unoptimized.Count == 0,
            "lane-generic kernel methods with neither AggressiveInlining nor AggressiveOptimization (they would run unoptimized "
            + "through a short decode): " + string.Join(", ", unoptimized));
    }

    /// <summary>Generic methods of the kernels' namespace with a type parameter constrained to one of its interfaces.</summary>
    private static IEnumerable<MethodInfo> LaneGenericKernelMethods() =>
        typeof(PagedAttention).Assembly.GetTypes()
            .Where(t => t.Namespace == typeof(PagedAttention).Namespace)
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Where(m => m.IsGenericMethodDefinition && m.GetGenericArguments().Any(a => a.GetGenericParameterConstraints()
                .Any(c => c.IsInterface && c.Namespace == typeof(PagedAttention).Namespace)));
}
