// `platform generate`: load a model (or the demo model), generate from a text
// prompt or token ids, print the text as it streams, or one JSON object.
using System.CommandLine;
using System.Text.Json;
using Platform.Core;
using Platform.Core.Workers;
using Platform.Engine;
using Platform.Engine.Model;
using Platform.Engine.Scheduling;
using Platform.Engine.Torch;

namespace Platform.Cli;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "HuggingFace model directory (default: the demo model, created on first run)" };
        var prompt = new Option<string?>("--prompt") { Description = "Text prompt" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { DefaultValueFactory = _ => 1.0 };
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 0 };
        var seed = new Option<ulong?>("--seed") { Description = "Seed for sampling" };
        var stop = new Option<string[]>("--stop") { Description = "Stop string (repeatable)", AllowMultipleArgumentsPerToken = false };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text" };
        var dtype = new Option<string>("--dtype") { Description = "Compute dtype: float32, bfloat16, float16", DefaultValueFactory = _ => "float32" };
        var weightDtype = new Option<string>("--weight-dtype") { Description = "Width the weight matrices are held in: auto (the checkpoint's bfloat16/float16, widened in registers), float32, bfloat16, float16", DefaultValueFactory = _ => WeightDtype.Auto };
        var device = new Option<string>(WorkerSwitches.Device) { Description = ComputeDevice.HelpText, DefaultValueFactory = _ => ComputeDevice.CpuName };
        var quantization = new Option<string>("--quantization") { Description = "none, or int8: decoder-layer weights quantized at load (one fp16 scale per 32 inputs, ~1.06 bytes per weight; float32 compute only)", DefaultValueFactory = _ => Quantization.None };
        var timings = new Option<bool>("--timings") { Description = "Print to stderr how long each start phase took, from process start to the first token" };
        var command = new Command("generate", "Generate text from a prompt") { model, prompt, promptIds, maxTokens, temperature, topP, topK, seed, stop, json, dtype, weightDtype, quantization, device, timings };
        command.SetAction(async (parse, ct) =>
        {
            var clock = parse.GetValue(timings) ? new StartTimings() : null;
            FastExit.Requested = true;
            try
            {
                if (parse.GetValue(prompt) is null == parse.GetValue(promptIds) is null)
                    throw new ArgumentException("give exactly one of --prompt TEXT or --prompt-ids 1,2,3.");
                string dir = parse.GetValue(model) ?? DemoModel.Ensure();
                using var engine = ModelLoading.LoadEngine(dir, new EngineOptions { ComputeDtype = parse.GetValue(dtype)!, WeightDtype = parse.GetValue(weightDtype)!, Quantization = parse.GetValue(quantization)!, Device = parse.GetValue(device)! });
                clock?.AddLoad(engine.LoadPhases);
                IReadOnlyList<int> ids;
                if (parse.GetValue(promptIds) is { } idText) ids = ModelLoading.ParseIds(idText);
                else if (engine.Tokenizer is { } tok) ids = tok.Encode(parse.GetValue(prompt)!, addBos: engine.Config.BosTokenId is not null);
                else throw new ArgumentException($"{dir} has no tokenizer.json or vocab.json; pass --prompt-ids instead of --prompt.");

                var sampling = new SamplingParams
                {
                    MaxTokens = parse.GetValue(maxTokens),
                    Temperature = parse.GetValue(temperature),
                    TopP = parse.GetValue(topP),
                    TopK = parse.GetValue(topK),
                    Seed = parse.GetValue(seed),
                    StopStrings = parse.GetValue(stop) ?? [],
                };
                bool asJson = parse.GetValue(json);
                var tokens = new List<int>();
                var text = new System.Text.StringBuilder();
                GenerationChunk? last = null;
                await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(ids, sampling), ct))
                {
                    if (tokens.Count == 0 && chunk.TokenIds.Count > 0) clock?.Mark("first token (prefill)");
                    tokens.AddRange(chunk.TokenIds);
                    text.Append(chunk.Text);
                    if (!asJson) Console.Write(chunk.Text);
                    last = chunk;
                }
                if (last?.Error is { } error) throw new InvalidOperationException(error);
                if (clock is not null)
                {
                    clock.Mark("the other tokens");
                    clock.WriteTo(Console.Error);
                    Console.Error.WriteLine($"malloc heap libtorch loaded into: {(LlmEngine.HeapInHugePages ? "2 MB pages" : "4 KB pages")}");
                }
                if (asJson)
                {
                    Console.WriteLine(JsonSerializer.Serialize(new
                    {
                        token_ids = tokens,
                        text = text.ToString(),
                        prompt_tokens = last?.PromptTokens ?? ids.Count,
                        cached_tokens = last?.CachedTokens ?? 0,
                        finish_reason = last?.Finish?.ToString().ToLowerInvariant(),
                    }));
                }
                else Console.WriteLine();
                return 0;
            }
            catch (Exception e) when (e is ModelLoadException or EngineRequestException or ArgumentException or DeviceUnavailableException)
            {
                await Console.Error.WriteLineAsync($"error: {e.Message}");
                return 2;
            }
        });
        return command;
    }
}
