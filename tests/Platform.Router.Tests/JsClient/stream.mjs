// Streams one chat completion and one text completion through the router with
// the official OpenAI JavaScript client (npm "openai", installed next to this
// file by scripts/fetch-test-clients.sh) and prints what the client saw as one
// JSON line. The router's stream carries SSE comment lines while it waits; the
// client must skip them unchanged. Usage: node stream.mjs BASE_URL MODEL
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });

const result = { chat: { text: "", finish: null, chunks: 0 }, completion: { text: "", finish: null, chunks: 0 } };

const chat = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "a long document" }], max_tokens: 3, stream: true,
});
for await (const chunk of chat) {
  result.chat.chunks++;
  const choice = chunk.choices[0];
  if (!choice) continue;
  result.chat.text += choice.delta?.content ?? "";
  result.chat.finish ??= choice.finish_reason;
}

const completion = await client.completions.create({ model, prompt: "a long document", max_tokens: 3, stream: true });
for await (const chunk of completion) {
  result.completion.chunks++;
  const choice = chunk.choices[0];
  if (!choice) continue;
  result.completion.text += choice.text ?? "";
  result.completion.finish ??= choice.finish_reason;
}

console.log(JSON.stringify(result));
