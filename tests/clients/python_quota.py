"""The official OpenAI Python SDK meets a key whose budget is spent; exits non-zero on a failure.

Run by tests/budgets.rs with GATEWAY_URL and GATEWAY_TOKEN. The client keeps the SDK's default
retries (two): the gateway's `x-should-retry: false` must stop them, which the test checks by
counting the refusals the gateway made.
"""
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1", api_key=os.environ["GATEWAY_TOKEN"], timeout=60)


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


try:
    client.chat.completions.create(model="haiku", messages=[{"role": "user", "content": "over budget"}])
    check(False, "a spent budget raises")
except openai.RateLimitError as error:
    check(error.status_code == 429, f"status 429: {error.status_code}")
    check(error.code == "insufficient_quota", f"code insufficient_quota: {error.code}")
    check(error.type == "insufficient_quota", f"type insufficient_quota: {error.type}")
    check("resets at" in error.message, f"the message names the reset time: {error.message}")

print("all checks passed")
