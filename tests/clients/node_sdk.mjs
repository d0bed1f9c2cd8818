// Drives the gateway with the official OpenAI npm SDK; exits non-zero on the first failure.
// Run by tests/openai_sdks.rs with GATEWAY_URL, GATEWAY_TOKEN, FULL_GATEWAY_URL and MARKER.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

import { check, marker, token, untilRunning, url as gatewayUrl } from "./checks.mjs";

const url = gatewayUrl + "/v1";
const client = new OpenAI({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 120_000 });

const answer = await client.chat.completions.create({
  model: "haiku",
  messages: [{ role: "user", content: "[[mock:text node says hello]]" }],
});
check(answer.choices[0].message.content === "node says hello", `completion content: ${answer.choices[0].message.content}`);
check(answer.usage.prompt_tokens > 0 && answer.usage.completion_tokens > 0, "usage filled");

const stream = await client.chat.completions.create({
  model: "haiku",
  messages: [{ role: "user", content: [{ type: "text", text: "[[mock:text node streams these words]]" }] }],
  stream: true,
  stream_options: { include_usage: true },
});
const deltas = [];
let finish = null;
let usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.delta?.content) deltas.push(choice.delta.content);
    if (choice.finish_reason) finish = choice.finish_reason;
  }
}
check(deltas.join("") === "node streams these words", `joined deltas: ${deltas.join("")}`);
check(finish === "stop", "stream finish_reason stop");
check(usage && usage.total_tokens > 0, "usage chunk");

const ids = [];
for await (const model of client.models.list()) ids.push(model.id);
check(ids.includes("haiku") && ids.includes("opus"), `models listed: ${ids}`);

await client.chat.completions.create({
  model: "sonnet",
  messages: [
    { role: "user", content: "Remember the word " + marker + "-node" },
    { role: "assistant", content: "Remembered." },
    { role: "user", content: "Which word?" },
  ],
});
check(true, "multi-turn completion");

try {
  await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });
  check(false, "unknown model raised");
} catch (error) {
  check(error instanceof OpenAI.BadRequestError && String(error.message).includes("gpt-4o"), `BadRequestError: ${error}`);
}

// Structured output: parse() with a zod schema returns the answer parsed by that schema.
const Pelican = z.object({ name: z.string(), wingspan_cm: z.number().int() });
const parsed = await client.chat.completions.parse({
  model: "haiku",
  messages: [{ role: "user", content: '[[mock:structured {"name": "Percy", "wingspan_cm": 210}]] describe a pelican' }],
  response_format: zodResponseFormat(Pelican, "pelican"),
});
const pelican = parsed.choices[0].message.parsed;
check(pelican?.name === "Percy" && pelican?.wingspan_cm === 210, `parse(): ${JSON.stringify(pelican)}`);

try {
  await client.chat.completions.parse({
    model: "haiku",
    messages: [{ role: "user", content: "[[mock:structured refuse]] [[mock:text no JSON here]]" }],
    response_format: zodResponseFormat(Pelican, "pelican"),
  });
  check(false, "unfit structured output raised");
} catch (error) {
  check(error instanceof OpenAI.UnprocessableEntityError, `UnprocessableEntityError: ${error}`);
}

try {
  await new OpenAI({ baseURL: url, apiKey: "wrong", maxRetries: 0 }).chat.completions.create({
    model: "haiku",
    messages: [{ role: "user", content: "hi" }],
  });
  check(false, "wrong key raised");
} catch (error) {
  check(error instanceof OpenAI.AuthenticationError, `AuthenticationError: ${error}`);
}

const fullUrl = process.env.FULL_GATEWAY_URL;
const full = new OpenAI({ baseURL: fullUrl + "/v1", apiKey: token, maxRetries: 0, timeout: 120_000 });
const slow = full.chat.completions.create({
  model: "haiku",
  messages: [{ role: "user", content: "[[mock:delay 3000]] hold the only slot" }],
});
await untilRunning(fullUrl);
try {
  await full.chat.completions.create({ model: "haiku", messages: [{ role: "user", content: "one too many" }] });
  check(false, "full queue raised");
} catch (error) {
  check(error instanceof OpenAI.InternalServerError && error.status === 503, `InternalServerError 503: ${error}`);
}
await slow;
console.log("node sdk: all checks passed");
