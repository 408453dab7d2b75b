/**
 * Endpoint names resolved again while handshakes fail (issue 17): the device's policy (when to ask, with its
 * back-off), the UAPI key that carries the name, and cmd/reresolve.ts's use of a lookup's answer.
 */
import assert from "node:assert/strict";
import { formatGet, formatSet, parseSet } from "../../lib/uapi.ts";
import { Endpoint, parseEndpoint } from "../../lib/ip.ts";
import type { Peer } from "../../lib/peer.ts";
import { RESOLVE_BACKOFF_MAX, RESOLVE_BACKOFF_MIN } from "../../lib/timers.ts";
import { EndpointResolver, type Lookup } from "../../cmd/reresolve.ts";
import { Level, Logger } from "../../cmd/log.ts";
import { connect, elapse, packetAB, pair, peerOf, send } from "./_harness.ts";

const quiet = new Logger(Level.Error, "test", "text");

/** A's peer B gets a name; returns the times (ms since start) at which A asked for it to be resolved. */
function failingHandshakes(seconds: number, name: string | null = "b.example:2000") {
  const { a, b, clock } = pair();
  const peer = peerOf(a, b);
  peer.endpointName = name;
  const asked: number[] = [];
  const t0 = clock.now();
  a.device.onResolve = (p) => asked.push(p === peer ? clock.now() - t0 : -1);
  send(a, packetAB(1)); // staged; the first initiation goes out
  elapse(clock, a, b, seconds * 1000, () => null); // and nothing ever answers
  return { asked, a, b, clock, peer };
}

Deno.test("re-resolve: asked when an initiation goes unanswered, with pauses doubling", () => {
  const { asked } = failingHandshakes(120);
  // Retransmissions come every REKEY_TIMEOUT (+ jitter) until REKEY_ATTEMPT_TIME (90 s): the first failure
  // asks, then 10, 20, 40, 80 s after the start.
  assert.equal(asked.length, 5, `asked at ${asked}`);
  assert.ok(
    asked[0]! >= RESOLVE_BACKOFF_MIN && asked[0]! < RESOLVE_BACKOFF_MIN + 400,
    `first at ${asked[0]}`,
  );
  for (let i = 1; i < asked.length; i++) {
    const gap = asked[i]! - asked[i - 1]!;
    const want = RESOLVE_BACKOFF_MIN * 2 ** (i - 1);
    assert.ok(gap >= want && gap < want + 5_400, `gap ${i} is ${gap} ms, want about ${want}`);
  }
});

Deno.test("re-resolve: never asked for a peer without a name; the pause is capped; a handshake resets it", () => {
  assert.deepEqual(failingHandshakes(120, null).asked, []);
  const { a, b, clock } = pair();
  const peer = peerOf(a, b);
  // Long-failing: the pause reaches the cap and stays there.
  for (let i = 0; i < 12; i++) assert.ok(peer.timers.resolveDue(clock.now() + i * RESOLVE_BACKOFF_MAX * 2));
  assert.equal(peer.timers.resolveInterval, RESOLVE_BACKOFF_MAX);
  assert.ok(!peer.timers.resolveDue(clock.now() + 11 * RESOLVE_BACKOFF_MAX * 2 + 1000), "not again so soon");
  // A completed handshake starts over: the next failure asks at once.
  connect(a, b, clock);
  assert.equal(peer.timers.resolveInterval, RESOLVE_BACKOFF_MIN);
  assert.ok(peer.timers.resolveDue(clock.now()));
});

Deno.test("UAPI endpoint_name: parsed, formatted, emptied, refused when not a name, and never in a get", () => {
  const key = "ab".repeat(32);
  const r = parseSet(`public_key=${key}\nendpoint=192.0.2.1:51820\nendpoint_name=vpn.example.org:51820\n`);
  assert.ok(r.ok);
  assert.equal(r.value.peers[0]!.endpointName, "vpn.example.org:51820");
  assert.match(formatSet(r.value), /^endpoint_name=vpn\.example\.org:51820$/m);
  const cleared = parseSet(`public_key=${key}\nendpoint_name=\n`);
  assert.ok(cleared.ok && cleared.value.peers[0]!.endpointName === null);
  for (const bad of ["vpn.example.org", "vpn example:1", "host:99999"]) {
    const e = parseSet(`public_key=${key}\nendpoint_name=${bad}\n`);
    assert.ok(!e.ok && e.errno === 22, `${bad} refused`);
  }

  const { a, b } = pair();
  a.device.apply(r.value);
  const peer = a.device.peer(new Uint8Array(32).fill(0xab))!;
  assert.equal(peer.endpointName, "vpn.example.org:51820");
  assert.doesNotMatch(formatGet(a.device.info()), /endpoint_name/);
  // An endpoint given as an address forgets the name.
  const lit = parseSet(`public_key=${key}\nendpoint=192.0.2.9:51820\n`);
  assert.ok(lit.ok);
  a.device.apply(lit.value);
  assert.equal(peer.endpointName, null);
  void b;
});

function resolverFor(answers: Record<string, string | Error>) {
  const { a, b } = pair();
  const peer: Peer = peerOf(a, b);
  peer.endpointName = "b.example:2000";
  const asked: string[] = [];
  const lookup: Lookup = (host) => {
    asked.push(host);
    const r = answers[host];
    return r instanceof Error ? Promise.reject(r) : Promise.resolve(r ?? "0.0.0.0");
  };
  return { peer, resolver: new EndpointResolver(a.device, quiet, lookup), asked, device: a.device };
}

Deno.test("EndpointResolver: moves the endpoint when the name points elsewhere, and only then", async () => {
  const { peer, resolver, asked, device } = resolverFor({ "b.example": "198.51.100.7" });
  assert.ok(device.onResolve, "installed as the device's onResolve");
  await resolver.resolve(peer);
  assert.deepEqual(asked, ["b.example"]);
  assert.equal(peer.endpoint!.toString(), "198.51.100.7:2000");
  assert.equal(resolver.changes, 1);
  const same = peer.endpoint;
  await resolver.resolve(peer);
  assert.equal(peer.endpoint, same, "the same address changes nothing");
  assert.equal(resolver.changes, 1);
});

Deno.test("EndpointResolver: failures, IPv6 answers, one lookup at a time, and a name changed meanwhile", async () => {
  const failing = resolverFor({ "b.example": new Error("getaddrinfo EAI_AGAIN b.example") });
  const before = failing.peer.endpoint;
  await failing.resolver.resolve(failing.peer); // does not throw
  assert.equal(failing.peer.endpoint, before);

  const v6 = resolverFor({ "b.example": "2001:db8::7" });
  await v6.resolver.resolve(v6.peer);
  assert.equal(v6.peer.endpoint!.toString(), "[2001:db8::7]:2000");

  const { peer, resolver, asked } = resolverFor({ "b.example": "198.51.100.8" });
  const first = resolver.resolve(peer);
  const second = resolver.resolve(peer); // while the first is in flight: nothing
  peer.endpointName = null; // `wg set … endpoint 192.0.2.99:1` meanwhile
  peer.endpoint = parseEndpoint("192.0.2.99:1");
  await Promise.all([first, second]);
  assert.deepEqual(asked, ["b.example"]);
  assert.equal(peer.endpoint!.toString(), "192.0.2.99:1", "the newer setting wins");
  assert.ok(peer.endpoint instanceof Endpoint);
});
