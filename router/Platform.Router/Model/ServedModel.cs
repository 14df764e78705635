// The router's copy of the model's text side: tokenizer, chat template and
// config, loaded from the same directory the workers load. The router turns
// text into token ids itself so it can hash prompt blocks exactly as the engine
// will (Core's tokenizer and BlockHasher on both sides).
using Platform.Core.Models;
using Platform.Core.Tokenization;

namespace Platform.Router.Model;

public sealed class ServedModel
{
    private ServedModel(string directory, HfTokenizer tokenizer, IChatTemplate chatTemplate, ModelConfig config)
    {
        Directory = directory;
        Tokenizer = tokenizer;
        ChatTemplate = chatTemplate;
        Config = config;
    }

    public string Directory { get; }
    public HfTokenizer Tokenizer { get; }
    public IChatTemplate ChatTemplate { get; }
    public ModelConfig Config { get; }

    /// <summary>The directory's name, used as the model id when the workers name none.</summary>
    public string DefaultName => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(Directory)));

    public static ServedModel Load(string directory, TimeProvider timeProvider)
    {
        var config = ModelConfig.Load(directory);
        var tokenizer = HfTokenizer.Load(directory);
        var template = ChatTemplates.Resolve(tokenizer.ChatTemplate, config.ModelType, tokenizer, timeProvider);
        return new ServedModel(directory, tokenizer, template, config);
    }

    /// <summary>A plain completion prompt with the special tokens the tokenizer's post-processor adds (BOS for Llama-2/3.1, Gemma), as Hugging Face does.</summary>
    public IReadOnlyList<int> EncodePrompt(string prompt) => Tokenizer.EncodeWithSpecialTokens(prompt);

    /// <summary>A chat conversation through the model's template; the template writes any BOS itself.</summary>
    public IReadOnlyList<int> EncodeChat(IReadOnlyList<ChatMessage> messages) =>
        Tokenizer.Encode(ChatTemplate.Render(messages, addGenerationPrompt: true), addBos: false);
}
