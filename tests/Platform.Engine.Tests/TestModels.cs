// Creates random-weight models once per test run (cached by options) in a temp
// folder, so each test can ask for "the tiny llama" or "tiny qwen2 with yarn".
using System.Collections.Concurrent;
using Platform.Core.Models;
using Platform.Core.Safetensors;

namespace Platform.Engine.Tests;

internal static class TestModels
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Created = new();
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "platform-tests-" + Environment.ProcessId);

    public static string Get(RandomModelOptions options)
    {
        string key = $"{options.Preset}-{options.ModelType}-{options.Dtype}-{options.Shards}-{options.Seed}-{options.RopeScaling}-{options.TieWordEmbeddings}-{options.MaxPositionEmbeddings}-{options.SlidingWindow}-{options.SlidingWindowFromLayer}-{options.Layers}";
        return Created.GetOrAdd(key, k => new Lazy<string>(() =>
        {
            string dir = Path.Combine(Root, Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(k)))[..16]);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            RandomModelGenerator.Create(dir, options);
            return dir;
        })).Value;
    }

    public static string TinyLlama => Get(new RandomModelOptions { Preset = "tiny", Seed = 7 });

    public static RandomModelOptions Tiny(string modelType = "llama", RopeScaling? rope = null, SafetensorsDtype dtype = SafetensorsDtype.F32) =>
        new() { Preset = "tiny", ModelType = modelType, Seed = 11, RopeScaling = rope ?? RopeScaling.NoScaling, Dtype = dtype };

    /// <summary>
    /// <see cref="Tiny"/> with sliding-window attention over <paramref name="window"/> keys (null: the same weights
    /// without one), in every layer for mistral and from <paramref name="fromLayer"/> on for qwen2.
    /// </summary>
    public static RandomModelOptions TinySliding(string modelType, int? window, int fromLayer = 0, SafetensorsDtype dtype = SafetensorsDtype.F32) =>
        Tiny(modelType, dtype: dtype) with { SlidingWindow = window, SlidingWindowFromLayer = fromLayer };

    public static LlmEngine Engine(string modelDir, EngineOptions? options = null) =>
        LlmEngine.Load(modelDir, options ?? new EngineOptions { NumKvBlocks = 256, Threads = 2, DefaultSeed = 1, Device = TestDevice.Name });
}
