// platform-router: the OpenAI-compatible front of the serving platform.
//   platform-router --model DIR --workers http://127.0.0.1:7001,http://127.0.0.1:7002 [--port 8000] [--policy kv-aware] [--api-key KEY]
// Prints "PLATFORM_ROUTER_LISTENING http://HOST:PORT" once it accepts connections
// (for process fixtures and `platform up`, which may pass --port 0).
// With --model hf://ORG/NAME the model is downloaded into the hub cache first; --download-only stops there
// (the operator's init container). Exit codes: 0 after a clean stop (or a finished download), 1 the download
// failed (--download-only), 2 invalid options or a failed download at start.
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Platform.Router;

if (await RouterApp.DownloadOnlyAsync(args, Console.Error).ConfigureAwait(false) is { } downloaded) return downloaded;

WebApplication app;
try
{
    app = RouterApp.Build(args);
}
catch (RouterConfigurationException e)
{
    await Console.Error.WriteLineAsync(e.Message).ConfigureAwait(false);
    return 2;
}

await app.StartAsync().ConfigureAwait(false);
foreach (var address in app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [])
    await Console.Out.WriteLineAsync($"{RouterApp.ListeningPrefix}{address}").ConfigureAwait(false);
await Console.Out.FlushAsync().ConfigureAwait(false);
await app.WaitForShutdownAsync().ConfigureAwait(false);
await app.DisposeAsync().ConfigureAwait(false);
return 0;
