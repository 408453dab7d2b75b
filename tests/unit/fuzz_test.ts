/**
 * The fuzzer (fuzz/) on a short budget: every target with a fixed seed and with a random one (printed), and
 * proof that its checks bite: broken replay windows, allowed-IPs tables and transport AEADs are caught.
 */
import assert from "node:assert/strict";
import { ReplayCounter } from "../../lib/replay.ts";
import type { TransportAead } from "../../lib/crypto.ts";
import { allowedIpsTarget } from "../../fuzz/allowedips_target.ts";
import { deviceTarget } from "../../fuzz/device_target.ts";
import { replayTarget } from "../../fuzz/replay_target.ts";
import { type FuzzResult, runFuzz } from "../../fuzz/runner.ts";
import { TARGETS } from "../../fuzz/targets.ts";
import { AllowedIps } from "../../lib/allowedips.ts";
import type { Cidr } from "../../lib/ip.ts";

function assertClean(r: FuzzResult): void {
  if (r.failure) assert.fail(r.failure.report);
  for (const t of r.results) assert.ok(t.inputs > 0, `target ${t.name} ran no input`);
}

Deno.test("fuzz: every target, fixed seed, short budget", () => {
  const r = runFuzz({ seed: 20261128, seconds: 1.0 * TARGETS.length, targets: TARGETS });
  assertClean(r);
  assert.ok(r.results.find((t) => t.name === "offload")!.stats.merged! > 0, "no packets were merged");
});

Deno.test("fuzz: every target, a random seed", () => {
  const seed = crypto.getRandomValues(new Uint32Array(1))[0]!;
  console.log(`fuzz seed ${seed} (reproduce: deno task fuzz --seed ${seed})`);
  assertClean(runFuzz({ seed, seconds: 0.5 * TARGETS.length, targets: TARGETS }));
});

Deno.test("fuzz: a device run is reproducible from its seed, and gets through a flood", () => {
  const run = () =>
    runFuzz({ seed: 99, seconds: 60, maxInputs: 6000, targets: [["device", (p) => deviceTarget(p)]] });
  const a = run(), b = run();
  assertClean(a);
  assert.equal(a.results[0]!.inputs, 6000);
  assert.deepEqual(a.results[0]!.stats, b.results[0]!.stats);
  // Past one flood: the recovery check ran, and data and handshakes went through along the way.
  const stats = a.results[0]!.stats;
  assert.ok(
    stats.recoveries! >= 1 && stats.delivered! > 100 && stats.handshakes! > 10,
    JSON.stringify(stats),
  );
});

Deno.test("fuzz: a replay window that forgets old counters is caught, with a reproducible report", () => {
  // Accepts anything not seen among the last 64 counters: the window is too small.
  class Small {
    seen: number[] = [];
    validate(lo: number, hi: number): boolean {
      const c = hi * 2 ** 32 + lo;
      if (this.seen.includes(c)) return false;
      this.seen.push(c);
      if (this.seen.length > 64) this.seen.shift();
      return true;
    }
    reset(): void {
      this.seen = [];
    }
  }
  const r = runFuzz({
    seed: 5,
    seconds: 5,
    targets: [["replay", (p) => replayTarget(p, () => new Small())]],
  });
  assert.ok(r.failure, "the broken window was not caught");
  assert.match(r.failure.report, /in target replay at iteration \d+, seed 5/);
  assert.match(r.failure.report, /00000000 {2}[0-9a-f]{2} /); // the hex dump of the input
  assert.match(r.failure.report, /deno task fuzz --seed 5 --target replay --inputs \d+/);
});

Deno.test("fuzz: an allowed-IPs table that ignores prefix length is caught", () => {
  // Answers with the first matching prefix inserted, not the longest.
  class FirstMatch {
    inner = new AllowedIps<number>();
    list: [Cidr, number][] = [];
    insert(c: Cidr, peer: number) {
      this.inner.insert(c, peer);
      this.list.push([c, peer]);
    }
    remove(c: Cidr, peer: number) {
      return this.inner.remove(c, peer);
    }
    removeByPeer(peer: number) {
      this.inner.removeByPeer(peer);
    }
    entriesForPeer(peer: number) {
      return this.inner.entriesForPeer(peer);
    }
    clear() {
      this.inner.clear();
      this.list = [];
    }
    lookup(family: 4 | 6, bytes: Uint8Array, off: number) {
      const hit = this.inner.lookup(family, bytes, off);
      if (hit === undefined) return undefined;
      for (const [c, peer] of this.list) {
        if (c.family === family && this.inner.entriesForPeer(peer).length > 0) return peer;
      }
      return hit;
    }
  }
  const r = runFuzz({
    seed: 6,
    seconds: 5,
    targets: [["allowedips", (p) => allowedIpsTarget(p, () => new FirstMatch())]],
  });
  assert.ok(r.failure, "the broken table was not caught");
});

Deno.test("fuzz: a device that accepts replays is caught", () => {
  const validate = ReplayCounter.prototype.validate;
  ReplayCounter.prototype.validate = () => true;
  try {
    const r = runFuzz({ seed: 7, seconds: 5, targets: [["device", (p) => deviceTarget(p)]] });
    assert.ok(r.failure, "accepted replays were not caught");
    assert.match(r.failure.report, /twice|again/);
  } finally {
    ReplayCounter.prototype.validate = validate;
  }
});

Deno.test("fuzz: a device whose AEAD does not authenticate is caught", () => {
  // Encrypts nothing and accepts any tag: a flipped bit in a data message is delivered.
  const nullAead: TransportAead = {
    name: "null",
    seal(_k, _lo, _hi, buf, off, len) {
      buf.fill(0, off + len, off + len + 16);
    },
    open(_k, _lo, _hi, _buf, _off, len) {
      return len >= 16;
    },
  };
  const r = runFuzz({ seed: 7, seconds: 8, targets: [["device", (p) => deviceTarget(p, nullAead)]] });
  assert.ok(r.failure, "forged data was not caught");
  assert.match(r.failure.report, /did not send/);
});
