// The JSON body the router benchmarks send: a streamed /v1/completions request whose prompt is
// token ids (so nothing depends on the tokenizer), ignore_eos so every request generates exactly
// max_tokens, greedy unless a temperature is given.
using System.Text.Json;

namespace Platform.Bench.Router;

internal static class CompletionBodies
{
    public static byte[] Streamed(string model, int[] prompt, int maxTokens, double? temperature = 0)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(prompt.Length * 6 + 256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("model", model);
            w.WriteStartArray("prompt");
            foreach (int t in prompt) w.WriteNumberValue(t);
            w.WriteEndArray();
            w.WriteNumber("max_tokens", maxTokens);
            if (temperature is { } t0) w.WriteNumber("temperature", t0);
            w.WriteBoolean("ignore_eos", true);
            w.WriteBoolean("stream", true);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}
