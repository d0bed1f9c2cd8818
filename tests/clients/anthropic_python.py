"""Drives the gateway's Messages route with the official Anthropic Python SDK; exits non-zero on
the first failure.

Run by tests/anthropic_sdks.rs with GATEWAY_URL, GATEWAY_TOKEN, FULL_GATEWAY_URL (a gateway whose
queue holds one run) and MARKER (a word the test then looks for in what reached the mock API).
"""
import os
import threading

import anthropic

from checks import MARKER, TOKEN, URL, check, until_running

# The SDK sends the key as `x-api-key`, and `anthropic-version`.
client = anthropic.Anthropic(base_url=URL, api_key=TOKEN, max_retries=0, timeout=120)


# A message.
message = client.messages.create(
    model="haiku",
    max_tokens=1024,
    messages=[{"role": "user", "content": "[[mock:text python says hello]]"}],
)
check(message.content[0].type == "text" and message.content[0].text == "python says hello", f"content: {message.content!r}")
check(message.id.startswith("msg_") and message.type == "message" and message.role == "assistant", f"message object: {message.id} {message.type} {message.role}")
check(message.stop_reason == "end_turn" and message.stop_sequence is None, f"stop_reason: {message.stop_reason}")
check(message.model == "haiku", "model as requested")
check(message.usage.input_tokens > 0 and message.usage.output_tokens > 0, f"usage filled: {message.usage}")

# A streamed message: the joined text deltas equal the answer, and the final message has usage.
with client.messages.stream(
    model="haiku",
    max_tokens=1024,
    messages=[{"role": "user", "content": [{"type": "text", "text": "[[mock:text streamed words arrive one by one]]"}]}],
) as stream:
    deltas = list(stream.text_stream)
    final = stream.get_final_message()
check("".join(deltas) == "streamed words arrive one by one", f"joined deltas: {''.join(deltas)!r}")
check(len(deltas) > 1, f"several deltas ({len(deltas)})")
check(final.content[0].text == "streamed words arrive one by one", f"final message text: {final.content!r}")
check(final.stop_reason == "end_turn", f"final stop_reason: {final.stop_reason}")
check(final.usage.input_tokens > 0 and final.usage.output_tokens > 0, f"final usage: {final.usage}")

# A system prompt, as text blocks: it reaches the agent (the test checks the mock saw it).
client.messages.create(
    model="haiku",
    max_tokens=64,
    system=[{"type": "text", "text": "Always mention " + MARKER + "-system."}],
    messages=[{"role": "user", "content": "Say something."}],
)
check(True, "system prompt")

# A multi-turn conversation: earlier turns reach the agent (the test checks the mock saw them).
client.messages.create(
    model="sonnet",
    max_tokens=64,
    messages=[
        {"role": "user", "content": "Remember the word " + MARKER + "-user"},
        {"role": "assistant", "content": [{"type": "text", "text": "I will remember " + MARKER + "-assistant"}]},
        {"role": "user", "content": "Which word?"},
    ],
)
check(True, "multi-turn message")

# An unknown model.
try:
    client.messages.create(model="claude-2.1", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    check(False, "unknown model raised")
except anthropic.NotFoundError as error:
    check(error.status_code == 404 and "claude-2.1" in str(error), f"NotFoundError: {error}")

# A wrong key.
try:
    anthropic.Anthropic(base_url=URL, api_key="wrong", max_retries=0).messages.create(
        model="haiku", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    check(False, "wrong key raised")
except anthropic.AuthenticationError as error:
    check(error.status_code == 401 and "Invalid token" in str(error), f"AuthenticationError: {error}")

# A full queue: 429 with Retry-After, which the SDK raises as RateLimitError (once: no retries).
full_url = os.environ["FULL_GATEWAY_URL"]
full = anthropic.Anthropic(base_url=full_url, api_key=TOKEN, max_retries=0, timeout=120)
slow = threading.Thread(
    target=lambda: full.messages.create(
        model="haiku", max_tokens=8, messages=[{"role": "user", "content": "[[mock:delay 3000]] hold the only slot"}]
    )
)
slow.start()
until_running(full_url)
try:
    full.messages.create(model="haiku", max_tokens=8, messages=[{"role": "user", "content": "one too many"}])
    check(False, "full queue raised")
except anthropic.RateLimitError as error:
    check(error.status_code == 429 and "queue full" in str(error), f"RateLimitError: {error}")
    check(error.response.headers.get("retry-after") is not None, "Retry-After sent")
slow.join()
print("anthropic python sdk: all checks passed")
