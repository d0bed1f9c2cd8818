// What the SDK client scripts share: the gateway they drive (from the environment the Rust tests
// set: GATEWAY_URL, GATEWAY_TOKEN, MARKER), the check that stops at the first failure, and the wait
// until a full gateway's only slot is taken.

export const url = process.env.GATEWAY_URL;
export const token = process.env.GATEWAY_TOKEN;
export const marker = process.env.MARKER;

// Prints `message` as passed, or as failed and exits 1 (the test prints the output).
export function check(condition, message) {
  if (!condition) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
  }
  console.log(`ok: ${message}`);
}

// Awaits `promise`, which must reject with an `errorClass`; answers the error.
export async function raises(promise, errorClass, what) {
  try {
    await promise;
  } catch (error) {
    check(error instanceof errorClass, `${what}: ${error}`);
    return error;
  }
  check(false, `${what} raised`);
}

// Waits, at most `limit` ms, until the gateway at `gatewayUrl` reports a run active.
export async function untilRunning(gatewayUrl, limit = 30_000) {
  const deadline = Date.now() + limit;
  while (Date.now() < deadline) {
    const health = await (await fetch(gatewayUrl + "/health")).json();
    if (health.active === 1) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
