// platform-worker: serves one model over gRPC. Run `platform-worker --help`.
// Exit codes: 0 after a clean stop (SIGTERM drains first), 2 invalid options, 3 the model failed to load
// (or to download). With --download-only: 0 once the model is in the hub cache, 1 when it cannot be had.
using Microsoft.Extensions.Options;
using Platform.Worker;

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.Out.WriteLine(WorkerCommandLine.Usage);
    return 0;
}

WebApplication app;
try
{
    app = WorkerHost.Build(args);
}
catch (Exception e) when (e is InvalidOperationException or FormatException)
{
    // Binding failures, e.g. "--port abc": the message names the key and the value.
    Console.Error.WriteLine($"platform-worker: bad configuration: {e.Message}");
    return 2;
}

try
{
    var options = app.Services.GetRequiredService<IOptions<WorkerOptions>>().Value;
    if (options.DownloadOnly)
    {
        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Platform.Worker.Download");
        int code = await WorkerModel.DownloadOnlyAsync(options, logger, stop.Token);
        await app.DisposeAsync();
        return code;
    }
}
catch (OptionsValidationException e)
{
    return Invalid(e);
}

bool loadFailed = false;
app.Lifetime.ApplicationStopped.Register(() => loadFailed = app.Services.GetRequiredService<EngineHost>().State == EngineState.Failed);
try
{
    // RunAsync stops the host on SIGTERM/Ctrl-C (after the drain) and disposes it.
    await app.RunAsync();
}
catch (OptionsValidationException e)
{
    return Invalid(e);
}
return loadFailed ? 3 : 0;

static int Invalid(OptionsValidationException e)
{
    Console.Error.WriteLine("platform-worker: invalid options:");
    foreach (var failure in e.Failures) Console.Error.WriteLine($"  - {failure}");
    Console.Error.WriteLine("Run platform-worker --help for the list of options.");
    return 2;
}
