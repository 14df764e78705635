// The model's own sampling defaults from generation_config.json (Hugging Face's file): what a
// request that leaves temperature, top_p or top_k out gets, as vLLM applies them. Missing file
// or fields mean "no default" (the API's own defaults then apply). repetition_penalty is read so
// the router can say it is not applied; eos ids are the engine's business (config.json).
using System.Text.Json;

namespace Platform.Core.Models;

public sealed record GenerationConfig(double? Temperature, double? TopP, int? TopK, double? RepetitionPenalty)
{
    public const string FileName = "generation_config.json";

    public static readonly GenerationConfig None = new(null, null, null, null);

    /// <summary>Reads <c>generation_config.json</c> in <paramref name="directory"/>; <see cref="None"/> when there is none.</summary>
    /// <exception cref="ModelLoadException">The file exists but is not a JSON object with numeric fields.</exception>
    public static GenerationConfig Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return None;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelLoadException($"{path} must hold a JSON object.");
            // Like vLLM's --generation-config auto: the sampling fields as they are (do_sample is not consulted).
            return new GenerationConfig(
                Number(root, "temperature", path),
                Number(root, "top_p", path),
                Number(root, "top_k", path) is { } k ? (int)k : null,
                Number(root, "repetition_penalty", path));
        }
        catch (JsonException e)
        {
            throw new ModelLoadException($"{path} is not valid JSON ({e.Message}); fix or remove it.");
        }
    }

    private static double? Number(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v) || !double.IsFinite(v))
            throw new ModelLoadException($"{path}: {name} must be a number.");
        return v;
    }
}
