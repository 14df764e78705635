// Leaving a one-shot command without the process teardown. After `generate` has written its
// answer, a normal exit still runs the C runtime's exit handlers, and libtorch's static destructors
// among them deregister every operator it registered at load: ~120 ms on this machine (strace: the
// main thread computes without a system call between the runtime's shutdown and exit_group), a
// tenth of the command's whole start-to-answer time. A one-shot command has released what it must
// (its engine is disposed, the console is flushed here), so it ends with _exit and lets the kernel
// reclaim the rest. Long-running commands (`up`, the worker) keep the normal exit and its handlers.
using System.Runtime.InteropServices;

namespace Platform.Cli;

internal static partial class FastExit
{
    /// <summary>Set by a command whose process has nothing left to release once it returns.</summary>
    public static bool Requested { get; set; }

    /// <summary>Flushes the console and ends the process with <paramref name="code"/>, skipping exit handlers.</summary>
    public static void Now(int code)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        Exit(code);
    }

    [LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void Exit(int status);
}
