// Entry point of the operator process; all wiring is in Hosting/OperatorHost.
using Platform.Operator.Hosting;

var app = OperatorHost.Build(args);
await app.RunAsync().ConfigureAwait(false);
