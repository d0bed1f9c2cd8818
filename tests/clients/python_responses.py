"""Drives the gateway's Responses API and function calling with the official OpenAI Python SDK;
exits non-zero on the first failure.

Run by tests/openai_sdks_responses.rs with GATEWAY_URL, GATEWAY_TOKEN and MARKER (a word the test
then looks for in what reached the mock API).
"""
import json

from openai import OpenAI

import checks
from checks import MARKER, TOKEN, check

URL = checks.URL + "/v1"
client = OpenAI(base_url=URL, api_key=TOKEN, max_retries=0, timeout=120)


# responses.create
response = client.responses.create(
    model="haiku",
    instructions="Be brief.",
    input="[[mock:text python responds]]",
)
check(response.output_text == "python responds", f"output_text: {response.output_text!r}")
check(response.status == "completed", f"status: {response.status}")
check(response.id.startswith("resp_"), f"id: {response.id}")
check(response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0,
      f"usage: {response.usage}")

# responses.stream: joined deltas equal the final output_text, usage present.
deltas, kinds = [], []
with client.responses.stream(model="haiku", input="[[mock:text python streams a response]]") as stream:
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
check("".join(deltas) == final.output_text == "python streams a response",
      f"joined deltas {''.join(deltas)!r} == output_text {final.output_text!r}")
check(len(deltas) > 1, f"several deltas ({len(deltas)})")
check(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"event types: {kinds}")
check(final.usage is not None and final.usage.total_tokens > 0, f"stream usage: {final.usage}")

# previous_response_id continues the conversation: the earlier turn reaches the agent.
first = client.responses.create(model="haiku", input=f"Remember the word {MARKER}-responses")
second = client.responses.create(model="haiku", previous_response_id=first.id, input="Which word?")
check(second.previous_response_id == first.id, "previous_response_id echoed")
check(second.status == "completed", "continued response completed")

# A tool loop on chat completions: the model calls get_weather, the client answers, and the
# final answer uses the result.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
messages = [{"role": "user", "content": 'Weather in Paris? [[mock:tool get_weather {"city": "Paris"}]]'}]
first = client.chat.completions.create(model="haiku", messages=messages, tools=tools)
choice = first.choices[0]
check(choice.finish_reason == "tool_calls", f"finish_reason: {choice.finish_reason}")
call = choice.message.tool_calls[0]
check(call.type == "function" and call.function.name == "get_weather", f"tool call: {call}")
check(json.loads(call.function.arguments) == {"city": "Paris"}, f"arguments: {call.function.arguments}")
messages.append(choice.message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "python-sunny-21C"})
final = client.chat.completions.create(model="haiku", messages=messages, tools=tools)
check(final.choices[0].finish_reason == "stop", f"final finish_reason: {final.choices[0].finish_reason}")
check("python-sunny-21C" in final.choices[0].message.content, f"final answer: {final.choices[0].message.content!r}")

# The same loop streamed: the call arrives as tool_calls deltas.
stream = client.chat.completions.create(model="haiku", messages=messages[:1], tools=tools, stream=True)
streamed_calls, finish = [], None
for chunk in stream:
    for choice in chunk.choices:
        for delta in choice.delta.tool_calls or []:
            streamed_calls.append(delta)
        if choice.finish_reason:
            finish = choice.finish_reason
check(finish == "tool_calls" and streamed_calls and streamed_calls[0].function.name == "get_weather",
      f"streamed tool call: {streamed_calls}, finish {finish}")

# The loop over the Responses API: the function_call item goes back with its output.
response_tools = [{"type": "function", "name": "get_weather", "description": "The weather of a city",
                   "parameters": tools[0]["function"]["parameters"]}]
items = [{"role": "user", "content": 'Weather in Oslo? [[mock:tool get_weather {"city": "Oslo"}]]'}]
called = client.responses.create(model="haiku", input=items, tools=response_tools)
calls = [item for item in called.output if item.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "get_weather", f"function_call output: {called.output}")
check(json.loads(calls[0].arguments) == {"city": "Oslo"}, f"arguments: {calls[0].arguments}")
items += [item.model_dump(exclude_none=True) for item in called.output]
items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "python-oslo-snow"})
answered = client.responses.create(model="haiku", input=items, tools=response_tools)
check("python-oslo-snow" in answered.output_text, f"final output_text: {answered.output_text!r}")

print("python responses: all checks passed")
