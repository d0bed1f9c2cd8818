// Drives the gateway's Responses API and function calling with the official OpenAI npm SDK; exits
// non-zero on the first failure. Run by tests/openai_sdks_responses.rs with GATEWAY_URL,
// GATEWAY_TOKEN and MARKER.
import OpenAI from "openai";

import { check, marker, token, url } from "./checks.mjs";

const client = new OpenAI({ baseURL: url + "/v1", apiKey: token, maxRetries: 0, timeout: 120_000 });

// responses.create
const response = await client.responses.create({
  model: "haiku",
  instructions: "Be brief.",
  input: [{ role: "user", content: [{ type: "input_text", text: "[[mock:text node responds]]" }] }],
});
check(response.output_text === "node responds", `output_text: ${response.output_text}`);
check(response.status === "completed", `status: ${response.status}`);
check(response.usage?.input_tokens > 0 && response.usage?.output_tokens > 0, "usage filled");

// responses.stream: joined deltas equal the final output_text, usage present.
const stream = client.responses.stream({ model: "haiku", input: "[[mock:text node streams a response]]" });
const deltas = [];
const kinds = [];
for await (const event of stream) {
  kinds.push(event.type);
  if (event.type === "response.output_text.delta") deltas.push(event.delta);
}
const final = await stream.finalResponse();
check(
  deltas.join("") === final.output_text && final.output_text === "node streams a response",
  `joined deltas ${deltas.join("")} == output_text ${final.output_text}`,
);
check(kinds[0] === "response.created" && kinds.at(-1) === "response.completed", `event types: ${kinds}`);
check(final.usage?.total_tokens > 0, "stream usage");

// previous_response_id continues the conversation.
const first = await client.responses.create({ model: "haiku", input: `Remember the word ${marker}-node-responses` });
const second = await client.responses.create({ model: "haiku", previous_response_id: first.id, input: "Which word?" });
check(second.previous_response_id === first.id && second.status === "completed", "continued response");

// A tool loop on chat completions.
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather of a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  },
];
const messages = [{ role: "user", content: 'Weather in Rome? [[mock:tool get_weather {"city": "Rome"}]]' }];
const called = await client.chat.completions.create({ model: "haiku", messages, tools });
const choice = called.choices[0];
check(choice.finish_reason === "tool_calls", `finish_reason: ${choice.finish_reason}`);
const call = choice.message.tool_calls[0];
check(call.type === "function" && call.function.name === "get_weather", `tool call: ${JSON.stringify(call)}`);
check(JSON.parse(call.function.arguments).city === "Rome", `arguments: ${call.function.arguments}`);
messages.push(choice.message);
messages.push({ role: "tool", tool_call_id: call.id, content: "node-rome-hot" });
const answered = await client.chat.completions.create({ model: "haiku", messages, tools });
check(answered.choices[0].finish_reason === "stop", "final finish_reason stop");
check(answered.choices[0].message.content.includes("node-rome-hot"), `final answer: ${answered.choices[0].message.content}`);

// runTools(): the SDK's own loop runs the function and sends its result back.
const runner = client.chat.completions.runTools({
  model: "haiku",
  messages: [{ role: "user", content: 'Weather in Lima? [[mock:tool get_weather {"city": "Lima"}]]' }],
  tools: [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather of a city",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        parse: JSON.parse,
        function: ({ city }) => `node-${city.toLowerCase()}-mild`,
      },
    },
  ],
});
const content = await runner.finalContent();
check(content.includes("node-lima-mild"), `runTools final content: ${content}`);

console.log("node responses: all checks passed");
