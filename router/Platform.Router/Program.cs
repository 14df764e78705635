// platform-router: the OpenAI-compatible front of the serving platform.
//   platform-router --model DIR --workers http://127.0.0.1:7001,http://127.0.0.1:7002 [--port 8000] [--policy kv-aware] [--api-key KEY]
using Platform.Router;

try
{
    var app = RouterApp.Build(args);
    await app.RunAsync().ConfigureAwait(false);
    return 0;
}
catch (RouterConfigurationException e)
{
    await Console.Error.WriteLineAsync(e.Message).ConfigureAwait(false);
    return 2;
}
