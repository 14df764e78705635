// The router's copy of the model's text side: tokenizer, chat template and
// config, loaded from the same directory the workers load. The router turns
// text into token ids itself so it can hash prompt blocks exactly as the engine
// will (Core's tokenizer and BlockHasher on both sides). An hf:// model is
// resolved to its hub-cache snapshot first (RouterApp); its default name is
// then the repo id, not the snapshot folder's commit hash.
using Platform.Core.Models;
using Platform.Core.Tokenization;

namespace Platform.Router.Model;

public sealed class ServedModel
{
    private ServedModel(string directory, string defaultName, HfTokenizer tokenizer, IChatTemplate? chatTemplate, string? chatTemplateProblem, ModelConfig config)
    {
        Directory = directory;
        DefaultName = defaultName;
        Tokenizer = tokenizer;
        ChatTemplate = chatTemplate;
        ChatTemplateProblem = chatTemplateProblem;
        Config = config;
    }

    public string Directory { get; }
    public HfTokenizer Tokenizer { get; }
    /// <summary>The model's own chat template (or --chat-template's); null when there is none, see ChatTemplateProblem.</summary>
    public IChatTemplate? ChatTemplate { get; }

    /// <summary>Why chat requests are refused when ChatTemplate is null.</summary>
    public string? ChatTemplateProblem { get; }
    public ModelConfig Config { get; }

    /// <summary>The model's sampling defaults (generation_config.json) for what a request leaves out.</summary>
    public GenerationConfig Generation { get; private init; } = GenerationConfig.None;

    /// <summary>The model id when the workers name none: the directory's name, or ORG/NAME for a hub model.</summary>
    public string DefaultName { get; }

    /// <param name="chatTemplate">--chat-template: a file that overrides the model's template.</param>
    /// <param name="defaultName">The name when none is configured (an hf:// model's repo id); default the directory's name.</param>
    /// <exception cref="ChatTemplateException">The --chat-template file is missing or not valid Jinja.</exception>
    public static ServedModel Load(string directory, TimeProvider timeProvider, string? chatTemplate = null, string? defaultName = null)
    {
        var config = ModelConfig.Load(directory);
        var tokenizer = HfTokenizer.Load(directory);
        var (template, problem) = ChatTemplates.Load(tokenizer, chatTemplate, timeProvider);
        return new ServedModel(directory, defaultName ?? Platform.Core.Models.Hub.HubModelSource.DefaultServedName(directory), tokenizer, template, problem, config) { Generation = GenerationConfig.Load(directory) };
    }

    /// <summary>A plain completion prompt with the special tokens the tokenizer's post-processor adds (BOS for Llama-2/3.1, Gemma), as Hugging Face does.</summary>
    public IReadOnlyList<int> EncodePrompt(string prompt) => Tokenizer.EncodeWithSpecialTokens(prompt);

    /// <summary>A chat conversation through the model's template; the template writes any BOS itself.</summary>
    /// <exception cref="ChatTemplateRenderException">No template, or the template refused the conversation: a 400 with this message.</exception>
    public IReadOnlyList<int> EncodeChat(IReadOnlyList<ChatMessage> messages, ChatTemplateInputs? inputs = null)
    {
        var template = ChatTemplate ?? throw new ChatTemplateRenderException(ChatTemplateProblem ?? "this model has no chat template.");
        return Tokenizer.Encode(template.Render(messages, addGenerationPrompt: true, inputs), addBos: false);
    }
}
