import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { keyToBase64 } from "../../lib/encoding.ts";
import { DEFAULT_MAX_HANDSHAKE_AGE, formatDuration, handshakeHealth } from "../../lib/health.ts";
import { Endpoint } from "../../lib/ip.ts";

const NOW = Date.UTC(2026, 10, 28, 9, 0, 0);
const EP = new Endpoint(4, new Uint8Array([192, 0, 2, 7]), 51820);

function peer(n: number, lastHandshakeMs: number, endpoint: Endpoint | null = EP) {
  return { publicKey: new Uint8Array(32).fill(n), endpoint, lastHandshakeMs };
}
const key = (n: number) => keyToBase64(new Uint8Array(32).fill(n));

Deno.test("health: the default age is REJECT_AFTER_TIME, and the limit is inclusive", () => {
  assert.equal(DEFAULT_MAX_HANDSHAKE_AGE, 180_000);
  const fresh = handshakeHealth([peer(1, NOW - 180_000)], NOW);
  assert.deepEqual(fresh, {
    healthy: true,
    reason: "the peer with an endpoint completed a handshake within 180 s",
  });
  const stale = handshakeHealth([peer(1, NOW - 180_001)], NOW);
  assert.equal(stale.healthy, false);
  assert.equal(
    stale.reason,
    `peer ${key(1)} (192.0.2.7:51820): latest handshake 3 minutes ago (2026-11-28T08:56:59Z), ` +
      "more than 180 s",
  );
});

Deno.test("health: a peer without an endpoint is not watched; one with an endpoint and no handshake is stale", () => {
  assert.equal(handshakeHealth([], NOW).healthy, true);
  assert.match(handshakeHealth([], NOW).reason, /no peer has an endpoint/);
  assert.equal(handshakeHealth([peer(1, 0, null), peer(2, NOW - 10_000_000, null)], NOW).healthy, true);
  const never = handshakeHealth([peer(1, 0, null), peer(2, 0)], NOW);
  assert.deepEqual(never, { healthy: false, reason: `peer ${key(2)} (192.0.2.7:51820): no handshake yet` });
});

Deno.test("health: the stalest peer is named (never first), the others counted, on one line", () => {
  const v = handshakeHealth([peer(1, NOW - 1000), peer(2, NOW - 400_000), peer(3, NOW - 7_265_000)], NOW);
  assert.equal(v.healthy, false);
  assert.ok(v.reason.startsWith(`peer ${key(3)} `), v.reason);
  assert.match(v.reason, /latest handshake 2 hours, 1 minute, 5 seconds ago .* \(and 1 more stale peer\)$/);
  const w = handshakeHealth([peer(1, NOW - 400_000), peer(2, 0), peer(3, NOW - 500_000)], NOW);
  assert.ok(
    w.reason.startsWith(`peer ${key(2)} (192.0.2.7:51820): no handshake yet (and 2 more stale peers)`),
  );
  assert.ok(!w.reason.includes("\n"));
  const ok = handshakeHealth([peer(1, NOW - 1000), peer(2, NOW - 2000)], NOW);
  assert.deepEqual(ok, {
    healthy: true,
    reason: "all 2 peers with an endpoint completed a handshake within 180 s",
  });
});

Deno.test("health: a given age; a handshake in the future (clock set back) counts as fresh", () => {
  assert.equal(handshakeHealth([peer(1, NOW - 3000)], NOW, 5000).healthy, true);
  const v = handshakeHealth([peer(1, NOW - 6000)], NOW, 5000);
  assert.equal(v.healthy, false);
  assert.match(v.reason, /6 seconds ago .* more than 5 s$/);
  assert.match(handshakeHealth([peer(1, NOW - 600)], NOW, 500).reason, /0 seconds ago .* more than 0\.5 s$/);
  assert.equal(handshakeHealth([peer(1, NOW + 3_600_000)], NOW, 5000).healthy, true);
});

Deno.test("health: durations worded as wg show words them", () => {
  assert.equal(formatDuration(0), "0 seconds");
  assert.equal(formatDuration(1999), "1 second");
  assert.equal(formatDuration(61_000), "1 minute, 1 second");
  assert.equal(formatDuration(90_061_000), "1 day, 1 hour, 1 minute, 1 second");
  assert.equal(formatDuration(2 * 86_400_000), "2 days");
});

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const run = (...args: string[]) =>
  spawnSync(process.execPath, ["run", "-A", MAIN, "health", ...args], { encoding: "utf8", timeout: 30_000 });

Deno.test("health: no daemon, or a bad argument, is exit 1 with one line", () => {
  const gone = run("tt-nosuch-if0");
  assert.equal(gone.status, 1);
  assert.equal(gone.stdout, "");
  assert.equal(gone.stderr, "unhealthy: tt-nosuch-if0: the daemon does not answer: No such device\n");
  const bad = run("tt-nosuch-if0", "--max-handshake-age", "soon");
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--max-handshake-age "soon": not a positive number of seconds/);
  const none = run();
  assert.equal(none.status, 1);
  assert.match(none.stderr, /^Usage: typetun health INTERFACE/);
});
