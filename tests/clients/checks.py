"""What the SDK client scripts share: the gateway they drive (from the environment the Rust tests
set: GATEWAY_URL, GATEWAY_TOKEN, MARKER), the check that stops at the first failure, and the wait
until a full gateway's only slot is taken.
"""
import json
import os
import sys
import time
import urllib.request

URL = os.environ["GATEWAY_URL"]
TOKEN = os.environ["GATEWAY_TOKEN"]
MARKER = os.environ["MARKER"]


def check(condition, message):
    """Prints `message` as passed, or as failed and exits 1 (the test prints the output)."""
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def until_running(gateway_url, limit=30):
    """Waits, at most `limit` seconds, until the gateway at `gateway_url` reports a run active."""
    deadline = time.time() + limit
    while time.time() < deadline:
        with urllib.request.urlopen(gateway_url + "/health") as response:
            if json.load(response)["active"] == 1:
                return
        time.sleep(0.05)
