// The `platform` command: a thin shell over the libraries. Each verb lives in
// its own file; this one only assembles the command tree.
using System.CommandLine;
using Platform.Cli;

StartTimings.MainEntered();
var root = new RootCommand("Long-context LLM serving platform");
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(ModelCommands.Create());
root.Subcommands.Add(UpCommand.Create());
// On SIGTERM/Ctrl-C, commands get their cancellation token and time to stop what they started
// (`up` drains its router and workers); the default 2 s would orphan child processes.
int code = await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(90) });
if (FastExit.Requested) FastExit.Now(code); // one-shot commands skip libtorch's teardown (FastExit.cs)
return code;
