"""Drives the gateway with the official OpenAI Python SDK; exits non-zero on the first failure.

Run by tests/openai_sdks.rs with GATEWAY_URL, GATEWAY_TOKEN, FULL_GATEWAY_URL (a gateway whose
queue holds one run) and MARKER (a word the test then looks for in what reached the mock API).
"""
import os
import threading

import openai
from openai import OpenAI
from pydantic import BaseModel

import checks
from checks import MARKER, TOKEN, check, until_running

URL = checks.URL + "/v1"
client = OpenAI(base_url=URL, api_key=TOKEN, max_retries=0, timeout=120)


# A completion.
answer = client.chat.completions.create(
    model="haiku",
    messages=[{"role": "user", "content": "[[mock:text python says hello]]"}],
)
check(answer.choices[0].message.content == "python says hello", f"completion content: {answer.choices[0].message.content!r}")
check(answer.choices[0].finish_reason == "stop", "finish_reason stop")
check(answer.model == "haiku", "model as requested")
check(answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0, f"usage filled: {answer.usage}")

# A streamed completion whose joined deltas equal the answer.
stream = client.chat.completions.create(
    model="haiku",
    messages=[{"role": "user", "content": "[[mock:text streamed words arrive one by one]]"}],
    stream=True,
    stream_options={"include_usage": True},
)
deltas, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            deltas.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
check("".join(deltas) == "streamed words arrive one by one", f"joined deltas: {''.join(deltas)!r}")
check(len(deltas) > 1, f"several deltas ({len(deltas)})")
check(finish == "stop", "stream finish_reason stop")
check(usage is not None and usage.total_tokens > 0, f"usage chunk: {usage}")

# models.list().
ids = [m.id for m in client.models.list()]
check("haiku" in ids and "sonnet" in ids, f"models listed: {ids}")
check(client.models.retrieve("opus").id == "opus", "models.retrieve")

# A multi-turn conversation: earlier turns reach the agent (the test checks the mock saw MARKER).
client.chat.completions.create(
    model="sonnet",
    messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Remember the word " + MARKER},
        {"role": "assistant", "content": "I will remember " + MARKER + "-assistant"},
        {"role": "user", "content": "Which word?"},
    ],
)
check(True, "multi-turn completion")

# An unknown model.
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    check(False, "unknown model raised")
except openai.BadRequestError as error:
    check("gpt-4o" in str(error) and "haiku" in str(error), f"BadRequestError names the model and the supported ones: {error}")

# Structured output: parse() sends the Pydantic model's JSON Schema as response_format and
# returns the answer as that model.
class Pelican(BaseModel):
    name: str
    wingspan_cm: int


parsed = client.chat.completions.parse(
    model="haiku",
    messages=[{"role": "user", "content": '[[mock:structured {"name": "Percy", "wingspan_cm": 210}]] describe a pelican'}],
    response_format=Pelican,
)
check(parsed.choices[0].message.parsed == Pelican(name="Percy", wingspan_cm=210), f"parse(): {parsed.choices[0].message.parsed!r}")

# A model that cannot fit the schema: an error, never prose parsed as the model.
try:
    client.chat.completions.parse(
        model="haiku",
        messages=[{"role": "user", "content": "[[mock:structured refuse]] [[mock:text no JSON here]]"}],
        response_format=Pelican,
    )
    check(False, "unfit structured output raised")
except openai.UnprocessableEntityError as error:
    check("response_format" in str(error), f"UnprocessableEntityError: {error}")

# A wrong key.
try:
    OpenAI(base_url=URL, api_key="wrong", max_retries=0).chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": "hi"}]
    )
    check(False, "wrong key raised")
except openai.AuthenticationError as error:
    check("Invalid token" in str(error), f"AuthenticationError: {error}")

# A full queue: 503, which the SDK raises as InternalServerError.
full_url = os.environ["FULL_GATEWAY_URL"]
full = OpenAI(base_url=full_url + "/v1", api_key=TOKEN, max_retries=0, timeout=120)
slow = threading.Thread(
    target=lambda: full.chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": "[[mock:delay 3000]] hold the only slot"}]
    )
)
slow.start()
until_running(full_url)
try:
    full.chat.completions.create(model="haiku", messages=[{"role": "user", "content": "one too many"}])
    check(False, "full queue raised")
except openai.InternalServerError as error:
    check(error.status_code == 503 and "queue full" in str(error), f"InternalServerError 503: {error}")
slow.join()
print("python sdk: all checks passed")
