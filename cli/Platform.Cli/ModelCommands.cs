// `platform model ...`: create-random writes a random-weight model in the
// HuggingFace layout; logits dumps every prompt position's logits as .npy so
// numerics can be compared with other implementations.
using System.CommandLine;
using Platform.Core;
using Platform.Core.Workers;
using Platform.Core.Models;
using Platform.Core.Safetensors;
using Platform.Engine;
using Platform.Engine.Model;
using Platform.Engine.Torch;
using Spectre.Console;
using TorchSharp;

namespace Platform.Cli;

internal static class ModelCommands
{
    public static Command Create()
    {
        var command = new Command("model", "Create and inspect models");
        command.Subcommands.Add(CreateRandom());
        command.Subcommands.Add(Download());
        command.Subcommands.Add(Logits());
        return command;
    }

    private static Command Download()
    {
        var source = new Argument<string>("source") { Description = "hf://ORG/NAME or hf://ORG/NAME@REVISION" };
        var command = new Command("download",
            "Download a model from a Hugging Face-style hub into the hub cache (HF_HOME; HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE as huggingface_hub reads them) and print its directory")
        { source };
        command.SetAction(async (parse, ct) =>
        {
            string given = parse.GetValue(source)!;
            if (!Platform.Core.Models.Hub.HubModelReference.IsHubSource(given))
            {
                await Console.Error.WriteLineAsync($"error: '{given}' is not a hub source; write hf://ORG/NAME[@REVISION].");
                return 2;
            }
            string? dir = await HubModels.ResolveAsync(given, ct);
            if (dir is null) return 1;
            Console.WriteLine(dir);
            return 0;
        });
        return command;
    }

    private static Command CreateRandom()
    {
        var preset = new Option<string>("--preset") { Description = "tiny | small | medium (TinyLlama-1.1B shape)", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong([.. RandomModelGenerator.Presets]);
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Output directory", Required = true };
        var arch = new Option<string>("--arch") { Description = "llama | qwen2 | mistral", DefaultValueFactory = _ => "llama" };
        arch.AcceptOnlyFromAmong([.. ModelConfig.SupportedModelTypes]);
        var dtype = new Option<string>("--dtype") { Description = "F32 | F16 | BF16", DefaultValueFactory = _ => "F32" };
        dtype.AcceptOnlyFromAmong("F32", "F16", "BF16");
        var shards = new Option<int>("--shards") { Description = "Split the weights into N safetensors files", DefaultValueFactory = _ => 1 };
        var context = new Option<int?>("--context") { Description = "max_position_embeddings (default: the preset's: tiny 4096, small and medium 32768)" };
        var rope = new Option<string>("--rope-scaling")
        {
            Description = "none | yarn: with yarn, a --context beyond the preset's is reached by YaRN scaling (factor = context / the preset's), as Qwen2.5's 128K models do",
            DefaultValueFactory = _ => "none",
        };
        rope.AcceptOnlyFromAmong("none", "yarn");
        var slidingWindow = new Option<int?>("--sliding-window")
        {
            Description = "Sliding-window attention over the last N positions (mistral: every layer; qwen2: from --max-window-layers on)",
        };
        var maxWindowLayers = new Option<int>("--max-window-layers")
        {
            Description = "qwen2 only: the first layer with the sliding window (layers below it attend fully)",
            DefaultValueFactory = _ => 0,
        };
        var command = new Command("create-random", "Write a random-weight model in HuggingFace layout")
        { preset, seed, output, arch, dtype, shards, context, rope, slidingWindow, maxWindowLayers };
        command.SetAction(parse =>
        {
            string presetName = parse.GetValue(preset)!;
            int trained = RandomModelGenerator.PresetConfig(presetName).MaxPositionEmbeddings;
            int? positions = parse.GetValue(context);
            if (positions is < 1)
            {
                Console.Error.WriteLine($"error: --context must be positive, got {positions}.");
                return 2;
            }
            var scaling = RopeScaling.NoScaling;
            if (parse.GetValue(rope) == "yarn")
            {
                if (positions is not { } p || p <= trained)
                {
                    Console.Error.WriteLine($"error: --rope-scaling yarn extends the {presetName} preset's {trained} positions; pass a larger --context, e.g. --context {trained * 2}.");
                    return 2;
                }
                scaling = new RopeScaling(RopeScalingType.Yarn, Factor: (double)p / trained, OriginalMaxPositionEmbeddings: trained);
            }
            string modelType = parse.GetValue(arch)!;
            int? window = parse.GetValue(slidingWindow);
            int windowFrom = parse.GetValue(maxWindowLayers);
            if (window is < 1)
            {
                Console.Error.WriteLine($"error: --sliding-window must be positive, got {window}.");
                return 2;
            }
            if (window is not null && modelType == "llama")
            {
                Console.Error.WriteLine("error: llama has no sliding window; pass --arch mistral or --arch qwen2 with --sliding-window.");
                return 2;
            }
            if (windowFrom != 0 && (modelType != "qwen2" || window is null))
            {
                Console.Error.WriteLine("error: --max-window-layers applies to --arch qwen2 with --sliding-window only.");
                return 2;
            }
            int layers = RandomModelGenerator.PresetConfig(presetName).NumLayers;
            if (windowFrom < 0 || windowFrom >= layers)
            {
                Console.Error.WriteLine($"error: --max-window-layers must be in [0, {layers}) for the {presetName} preset ({layers} layers), got {windowFrom}.");
                return 2;
            }
            var options = new RandomModelOptions
            {
                Preset = presetName,
                Seed = parse.GetValue(seed),
                ModelType = modelType,
                Dtype = Enum.Parse<SafetensorsDtype>(parse.GetValue(dtype)!),
                Shards = parse.GetValue(shards),
                MaxPositionEmbeddings = positions,
                RopeScaling = scaling,
                SlidingWindow = window,
                SlidingWindowFromLayer = windowFrom,
            };
            CreateWithProgress(parse.GetValue(output)!, options);
            return 0;
        });
        return command;
    }

    public static void CreateWithProgress(string dir, RandomModelOptions options)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"writing {options.Preset} model", maxValue: 1.0);
                RandomModelGenerator.Create(dir, options, new Progress<double>(p => task.Value = p));
                task.Value = 1.0;
            });
    }

    private static Command Logits()
    {
        var model = new Option<string>("--model") { Required = true, Description = "HuggingFace model directory" };
        var ids = new Option<string>("--prompt-ids") { Required = true, Description = "Comma-separated token ids" };
        var output = new Option<string>("--out") { Required = true, Description = "Output .npy file" };
        var dtype = new Option<string>("--dtype") { DefaultValueFactory = _ => "float32" };
        var weightDtype = new Option<string>("--weight-dtype") { Description = "Width the weight matrices are held in: auto (the checkpoint's bfloat16/float16, widened in registers), float32, bfloat16, float16", DefaultValueFactory = _ => WeightDtype.Auto };
        var device = new Option<string>(WorkerSwitches.Device) { Description = ComputeDevice.HelpText, DefaultValueFactory = _ => ComputeDevice.CpuName };
        var quantization = new Option<string>("--quantization") { Description = "none, or int8: decoder-layer weights quantized at load (one fp16 scale per 32 inputs, ~1.06 bytes per weight; float32 compute only)", DefaultValueFactory = _ => Quantization.None };
        var command = new Command("logits", "Write the logits of every prompt position as a float32 .npy [n_tokens, vocab]") { model, ids, output, dtype, weightDtype, quantization, device };
        command.SetAction(parse =>
        {
            try
            {
                var tokens = ModelLoading.ParseIds(parse.GetValue(ids)!);
                var logits = LogitsDump.Compute(parse.GetValue(model)!, tokens, TorchDtypes.Parse(parse.GetValue(dtype)!), parse.GetValue(weightDtype)!,
                    parse.GetValue(quantization)!, TorchDevices.Resolve(ComputeDevice.Parse(parse.GetValue(device))));
                Npy.WriteFloat32(parse.GetValue(output)!, logits, tokens.Count, logits.Length / tokens.Count);
                return 0;
            }
            catch (Exception e) when (e is ModelLoadException or ArgumentException or DeviceUnavailableException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 2;
            }
        });
        return command;
    }
}
