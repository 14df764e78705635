// generation_config.json supplies sampling defaults: read when present, "no default" when not,
// and a broken file is a load error that names it.
using Platform.Core;
using Platform.Core.Models;

namespace Platform.Core.Tests.Models;

public sealed class GenerationConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("genconfig-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void The_models_sampling_defaults_are_read_and_a_missing_file_means_none()
    {
        Assert.Same(GenerationConfig.None, GenerationConfig.Load(_dir));
        File.WriteAllText(Path.Combine(_dir, GenerationConfig.FileName),
            """{"bos_token_id":1,"eos_token_id":[2,3],"do_sample":true,"temperature":0.6,"top_p":0.9,"top_k":20,"repetition_penalty":1.05}""");
        Assert.Equal(new GenerationConfig(0.6, 0.9, 20, 1.05), GenerationConfig.Load(_dir));
        File.WriteAllText(Path.Combine(_dir, GenerationConfig.FileName), """{"temperature":"hot"}""");
        var e = Assert.Throws<ModelLoadException>(() => GenerationConfig.Load(_dir));
        Assert.Contains("temperature must be a number", e.Message, StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(_dir, GenerationConfig.FileName), "{");
        Assert.Contains("not valid JSON", Assert.Throws<ModelLoadException>(() => GenerationConfig.Load(_dir)).Message, StringComparison.Ordinal);
    }
}
