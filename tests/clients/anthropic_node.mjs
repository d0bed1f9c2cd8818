// Drives the gateway's Messages route with the official Anthropic npm SDK; exits non-zero on the
// first failure. Run by tests/anthropic_sdks.rs with GATEWAY_URL, GATEWAY_TOKEN, FULL_GATEWAY_URL
// and MARKER.
import Anthropic from "@anthropic-ai/sdk";

import { check, marker, raises, token, untilRunning, url } from "./checks.mjs";

// The SDK sends the key as `x-api-key`, and `anthropic-version`.
const client = new Anthropic({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 120_000 });

const message = await client.messages.create({
  model: "haiku",
  max_tokens: 1024,
  messages: [{ role: "user", content: "[[mock:text node says hello]]" }],
});
check(message.content[0].type === "text" && message.content[0].text === "node says hello", `content: ${JSON.stringify(message.content)}`);
check(message.id.startsWith("msg_") && message.type === "message" && message.stop_reason === "end_turn", "message object");
check(message.usage.input_tokens > 0 && message.usage.output_tokens > 0, `usage filled: ${JSON.stringify(message.usage)}`);

const stream = client.messages.stream({
  model: "haiku",
  max_tokens: 1024,
  messages: [{ role: "user", content: "[[mock:text node streams these words]]" }],
});
const deltas = [];
stream.on("text", (text) => deltas.push(text));
const final = await stream.finalMessage();
check(deltas.join("") === "node streams these words", `joined deltas: ${deltas.join("")}`);
check(deltas.length > 1, `several deltas (${deltas.length})`);
check(final.content[0].text === "node streams these words", "final message text");
check(final.stop_reason === "end_turn", `final stop_reason: ${final.stop_reason}`);
check(final.usage.input_tokens > 0 && final.usage.output_tokens > 0, `final usage: ${JSON.stringify(final.usage)}`);

await client.messages.create({
  model: "haiku",
  max_tokens: 64,
  system: "Always mention " + marker + "-system.",
  messages: [{ role: "user", content: "Say something." }],
});
check(true, "system prompt");

await client.messages.create({
  model: "sonnet",
  max_tokens: 64,
  messages: [
    { role: "user", content: "Remember the word " + marker + "-user" },
    { role: "assistant", content: "I will remember " + marker + "-assistant" },
    { role: "user", content: "Which word?" },
  ],
});
check(true, "multi-turn message");

const unknown = await raises(
  client.messages.create({ model: "claude-2.1", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }),
  Anthropic.NotFoundError,
  "unknown model: NotFoundError",
);
check(unknown.status === 404 && String(unknown.message).includes("claude-2.1"), "NotFoundError names the model");

const wrong = new Anthropic({ baseURL: url, apiKey: "wrong", maxRetries: 0 });
const denied = await raises(
  wrong.messages.create({ model: "haiku", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }),
  Anthropic.AuthenticationError,
  "wrong key: AuthenticationError",
);
check(denied.status === 401, "401");

const fullUrl = process.env.FULL_GATEWAY_URL;
const full = new Anthropic({ baseURL: fullUrl, apiKey: token, maxRetries: 0, timeout: 120_000 });
const slow = full.messages.create({
  model: "haiku",
  max_tokens: 8,
  messages: [{ role: "user", content: "[[mock:delay 3000]] hold the only slot" }],
});
await untilRunning(fullUrl);
const limited = await raises(
  full.messages.create({ model: "haiku", max_tokens: 8, messages: [{ role: "user", content: "one too many" }] }),
  Anthropic.RateLimitError,
  "full queue: RateLimitError",
);
check(limited.status === 429 && limited.headers?.get?.("retry-after") != null, "429 with Retry-After");
await slow;
console.log("anthropic node sdk: all checks passed");
