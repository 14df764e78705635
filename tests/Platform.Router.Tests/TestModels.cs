// Random-weight test models, created once per test run in a temp folder.
using System.Collections.Concurrent;
using Platform.Core.Models;

namespace Platform.Router.Tests;

internal static class TestModels
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Created = new();
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "platform-router-tests-" + Environment.ProcessId);

    public static string Get(RandomModelOptions options)
    {
        string key = $"{options.Preset}-{options.ModelType}-{options.Seed}-{options.MaxPositionEmbeddings}";
        return Created.GetOrAdd(key, k => new Lazy<string>(() =>
        {
            string dir = Path.Combine(Root, k);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            RandomModelGenerator.Create(dir, options);
            return dir;
        })).Value;
    }

    /// <summary>The tiny llama with a 1,024-token context.</summary>
    public static string TinyLlama => Get(new RandomModelOptions { Preset = "tiny", Seed = 7, MaxPositionEmbeddings = 1024 });
}
