// platform-worker: serves one model over gRPC. Run `platform-worker --help`.
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
    Console.Error.WriteLine($"platform-worker: bad configuration: {e.Message}");
    return 2;
}

await using (app)
{
    try
    {
        await app.RunAsync();
    }
    catch (OptionsValidationException e)
    {
        Console.Error.WriteLine("platform-worker: invalid options:");
        foreach (var failure in e.Failures) Console.Error.WriteLine($"  - {failure}");
        Console.Error.WriteLine("Run platform-worker --help for the list of options.");
        return 2;
    }
    var engines = app.Services.GetRequiredService<EngineHost>();
    return engines.State == EngineState.Failed ? 3 : 0;
}
