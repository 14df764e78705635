// platform-worker: serves one model over gRPC. Run `platform-worker --help`.
// Exit codes: 0 after a clean stop (SIGTERM drains first), 2 invalid options, 3 the model failed to load.
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

bool loadFailed = false;
app.Lifetime.ApplicationStopped.Register(() => loadFailed = app.Services.GetRequiredService<EngineHost>().State == EngineState.Failed);
try
{
    // RunAsync stops the host on SIGTERM/Ctrl-C (after the drain) and disposes it.
    await app.RunAsync();
}
catch (OptionsValidationException e)
{
    Console.Error.WriteLine("platform-worker: invalid options:");
    foreach (var failure in e.Failures) Console.Error.WriteLine($"  - {failure}");
    Console.Error.WriteLine("Run platform-worker --help for the list of options.");
    return 2;
}
return loadFailed ? 3 : 0;
