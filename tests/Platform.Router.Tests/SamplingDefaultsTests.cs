// What a request leaves out comes from the model's generation_config.json, then from the API's
// own defaults; what it sets always wins.
using System.Text.Json;
using Platform.Core.Models;
using Platform.Router.Api;

namespace Platform.Router.Tests;

public sealed class SamplingDefaultsTests
{
    private static SamplingRequest Parse(string json) => OpenAiRequests.ParseCompletion(JsonDocument.Parse(json).RootElement).Request!.Sampling;

    [Fact]
    public void Left_out_sampling_values_come_from_the_models_generation_config_then_the_api_defaults()
    {
        var model = new GenerationConfig(0.6, 0.9, 20, null);
        Assert.Equal((0.6, 0.9, 20), Parse("""{"model":"m","prompt":"x"}""").Resolve(model));
        Assert.Equal((1.0, 1.0, 0), Parse("""{"model":"m","prompt":"x"}""").Resolve(GenerationConfig.None));
        Assert.Equal((0.0, 0.5, 3), Parse("""{"model":"m","prompt":"x","temperature":0,"top_p":0.5,"top_k":3}""").Resolve(model));
        Assert.Equal((0.6, 0.9, 0), Parse("""{"model":"m","prompt":"x","top_k":-1}""").Resolve(model));
    }
}
