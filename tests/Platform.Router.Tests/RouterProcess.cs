// Runs platform-router as a real child process (through Core's ChildProcess, the
// runner `platform up` uses) and learns its address from the
// PLATFORM_ROUTER_LISTENING line.
using Platform.Core.Processes;

namespace Platform.Router.Tests;

internal sealed class RouterProcess : IAsyncDisposable
{
    private readonly ChildProcess _child;

    private RouterProcess(ChildProcess child, Uri address)
    {
        _child = child;
        Address = address;
    }

    public Uri Address { get; }
    /// <summary>The process id (for /proc readings such as its RSS).</summary>
    public int Id => _child.Id;
    public string OutputTail => _child.Tail;

    public static async Task<RouterProcess> StartAsync(IEnumerable<string> args)
    {
        var child = ChildProcess.StartDotnet("platform-router", Path.Combine(AppContext.BaseDirectory, "platform-router.dll"), args, tailLines: 200);
        try
        {
            var address = new Uri(await child.WaitForLineAsync(RouterApp.ListeningPrefix, TimeSpan.FromSeconds(60), CancellationToken.None));
            return new RouterProcess(child, address);
        }
        catch
        {
            child.Kill();
            await child.DisposeAsync();
            throw;
        }
    }

    /// <summary>Kills it (no drain) and releases it.</summary>
    public async ValueTask DisposeAsync()
    {
        _child.Kill();
        await _child.DisposeAsync();
    }
}
