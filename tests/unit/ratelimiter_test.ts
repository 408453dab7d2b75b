import assert from "node:assert/strict";
import {
  DEFAULT_MAX_ENTRIES,
  PACKET_COST,
  PACKETS_BURSTABLE,
  PACKETS_PER_SECOND,
  RateLimiter,
} from "../../lib/ratelimiter.ts";

function v4(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** An IPv6 address from four 32-bit words, as the kernel self-test builds them. */
function v6(w0: number, w1: number, w2: number, w3: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  [w0, w1, w2, w3].forEach((w, i) => v.setUint32(4 * i, w >>> 0));
  return b;
}

Deno.test("constants are the kernel's", () => {
  assert.equal(PACKETS_PER_SECOND, 20);
  assert.equal(PACKETS_BURSTABLE, 5);
  assert.equal(PACKET_COST, 50);
});

// The kernel's ratelimiter self-test (drivers/net/wireguard/selftest/ratelimiter.c), timings_test, with a fake
// clock instead of sleeping: [expected result, milliseconds to wait before the packet].
const COST = 1000 / PACKETS_PER_SECOND;
const EXPECTED_RESULTS: readonly (readonly [boolean, number])[] = [
  ...Array.from({ length: PACKETS_BURSTABLE }, () => [true, 0] as const),
  [false, 0],
  [true, COST],
  [false, 0],
  [true, COST * 2],
  [true, 0],
  [false, 0],
] as const;

Deno.test("kernel timings self-test", () => {
  const r = new RateLimiter({ seed: 0x1234 });
  let now = 5_000;
  const src4 = 8182;
  for (let i = 0; i < EXPECTED_RESULTS.length; i++) {
    const [expected, wait] = EXPECTED_RESULTS[i]!;
    now += wait;
    assert.equal(r.allow(v4(src4), now), expected, `v4 packet ${i}`);
    // Another IPv4 source is always allowed: buckets are per source.
    assert.equal(r.allow(v4(src4 + i + 1), now), true, `other v4 source ${i}`);
    // IPv6: the low 64 bits change every time, but the /64 is the same, so it shares one bucket.
    assert.equal(r.allow(v6(1212, 289188, i, i), now), expected, `v6 packet ${i}`);
    // A different /64 is a different bucket.
    assert.equal(r.allow(v6(1212 + i + 1, 289188, i, i), now), true, `other v6 prefix ${i}`);
  }
});

Deno.test("kernel capacity self-test: the max_entries-th new source is refused", () => {
  const r = new RateLimiter();
  assert.equal(r.size, 0);
  for (let i = 0; i <= DEFAULT_MAX_ENTRIES; i++) {
    assert.equal(r.allow(v4(i), 0), i !== DEFAULT_MAX_ENTRIES, `source ${i}`);
  }
  assert.equal(r.size, DEFAULT_MAX_ENTRIES);
});

Deno.test("burst then refusal, refill over time, capped at the burst", () => {
  const r = new RateLimiter();
  const a = v4(0x0a000001);
  for (let i = 0; i < PACKETS_BURSTABLE; i++) assert.equal(r.allow(a, 0), true);
  assert.equal(r.allow(a, 0), false);
  assert.equal(r.allow(a, 49), false); // 49 ms earns less than one packet
  assert.equal(r.allow(a, 50), true); // 50 ms earns exactly one (1 ms carried over from the refused try)
  assert.equal(r.allow(a, 50), false);
  // Waiting ten seconds earns no more than the burst. (The entry is collected after a second idle and comes
  // back as a new source, which also starts with a full bucket.)
  let ok = 0;
  for (let i = 0; i < 20; i++) if (r.allow(a, 10_000)) ok++;
  assert.equal(ok, PACKETS_BURSTABLE);
  // Steady state: one packet per PACKET_COST.
  let t = 10_000;
  for (let i = 0; i < 40; i++) {
    t += PACKET_COST;
    assert.equal(r.allow(a, t), true, `steady ${i}`);
    assert.equal(r.allow(a, t), false, `steady ${i} again`);
  }
});

Deno.test("separate sources are independent", () => {
  const r = new RateLimiter();
  for (let i = 0; i < PACKETS_BURSTABLE; i++) assert.equal(r.allow(v4(1), 0), true);
  assert.equal(r.allow(v4(1), 0), false);
  for (let i = 0; i < PACKETS_BURSTABLE; i++) assert.equal(r.allow(v4(2), 0), true);
  assert.equal(r.allow(v4(2), 0), false);
  assert.equal(r.size, 2);
});

Deno.test("IPv6 sources are grouped by /64; IPv4 and IPv6 keys never mix", () => {
  const r = new RateLimiter();
  for (let i = 0; i < PACKETS_BURSTABLE; i++) {
    assert.equal(r.allow(v6(0x20010db8, 0, 0, i + 1), 0), true);
  }
  assert.equal(r.allow(v6(0x20010db8, 0, 0xffffffff, 0xffffffff), 0), false);
  assert.equal(r.allow(v6(0x20010db8, 1, 0, 1), 0), true);
  // 32.1.13.184 has the same first word as 2001:db8::, but it is another family.
  assert.equal(r.allow(v4(0x20010db8), 0), true);
  assert.equal(r.size, 3);
});

Deno.test("IPv4-mapped IPv6 sources are keyed as IPv4", () => {
  const r = new RateLimiter();
  const mapped = (a: number) => v6(0, 0, 0xffff, a);
  for (let i = 0; i < PACKETS_BURSTABLE; i++) assert.equal(r.allow(mapped(0xc0000201), 0), true);
  assert.equal(r.allow(mapped(0xc0000201), 0), false);
  assert.equal(r.allow(v4(0xc0000201), 0), false); // the same source
  assert.equal(r.allow(mapped(0xc0000202), 0), true); // a different IPv4 source in the same ::ffff:0:0/64
});

Deno.test("malformed addresses are refused without throwing", () => {
  const r = new RateLimiter();
  assert.equal(r.allow(new Uint8Array(0), 0), false);
  assert.equal(r.allow(new Uint8Array(5), 0), false);
  assert.equal(r.size, 0);
});

Deno.test("gc forgets sources idle for more than a second", () => {
  const r = new RateLimiter();
  r.allow(v4(1), 0);
  r.allow(v4(2), 600);
  r.gc(1000); // neither idle for more than a second
  assert.equal(r.size, 2);
  r.gc(1001);
  assert.equal(r.size, 1);
  r.gc(1601);
  assert.equal(r.size, 0);
});

Deno.test("gc runs lazily from allow, and a collected source starts afresh", () => {
  const r = new RateLimiter();
  for (let i = 0; i < PACKETS_BURSTABLE + 1; i++) r.allow(v4(7), 0);
  for (let i = 0; i < 100; i++) r.allow(v4(1000 + i), 0);
  assert.equal(r.size, 101);
  assert.equal(r.allow(v4(8), 1500), true);
  assert.equal(r.size, 1);
});

Deno.test("a full table admits new sources again after gc", () => {
  const r = new RateLimiter({ maxEntries: 100 });
  for (let i = 0; i < 100; i++) assert.equal(r.allow(v4(i), 0), true);
  assert.equal(r.allow(v4(100), 500), false);
  assert.equal(r.allow(v4(5), 500), true); // known sources keep working
  // At 1000 the lazy gc runs, but nothing has been idle for more than a second yet.
  assert.equal(r.allow(v4(100), 1000), false);
  r.gc(1000.5); // source 5 was refreshed at 500; the others go

  assert.equal(r.size, 1);
  assert.equal(r.allow(v4(100), 1002), true);
});

Deno.test("agrees with a reference model through many insertions and collections", () => {
  // Small table, staggered ages and a seeded hash: exercises long probe runs and backward-shift deletion.
  // The model is the kernel's algorithm over a Map.
  const MAX = 64;
  const r = new RateLimiter({ maxEntries: MAX, seed: 99 });
  const model = new Map<number, { last: number; tokens: number }>();
  let lastGc = -Infinity;
  const modelGc = (now: number) => {
    lastGc = now;
    for (const [src, e] of model) if (now - e.last > 1000) model.delete(src);
  };
  const modelAllow = (src: number, now: number): boolean => {
    if (now - lastGc >= 1000) modelGc(now);
    const e = model.get(src);
    if (e) {
      const tokens = Math.min(PACKET_COST * PACKETS_BURSTABLE, e.tokens + now - e.last);
      e.last = now;
      e.tokens = tokens >= PACKET_COST ? tokens - PACKET_COST : tokens;
      return tokens >= PACKET_COST;
    }
    if (model.size >= MAX) return false;
    model.set(src, { last: now, tokens: PACKET_COST * (PACKETS_BURSTABLE - 1) });
    return true;
  };
  let t = 0;
  let s = 12345;
  for (let round = 0; round < 400; round++) {
    t += 37 + (round % 5) * 100;
    for (let k = 0; k < 12; k++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      const src = (s >>> 8) % 97;
      assert.equal(r.allow(v4(src), t), modelAllow(src, t), `round ${round}, source ${src}`);
    }
    if (round % 3 === 0) {
      r.gc(t);
      modelGc(t);
    }
    assert.equal(r.size, model.size, `round ${round}`);
  }
});

Deno.test("clear forgets everything", () => {
  const r = new RateLimiter();
  r.allow(v4(1), 0);
  r.allow(v6(1, 2, 3, 4), 0);
  r.clear();
  assert.equal(r.size, 0);
  for (let i = 0; i < PACKETS_BURSTABLE; i++) assert.equal(r.allow(v4(1), 1), true);
});

Deno.test("the bound must be sensible", () => {
  assert.throws(() => new RateLimiter({ maxEntries: 0 }), RangeError);
  assert.throws(() => new RateLimiter({ maxEntries: 1.5 }), RangeError);
});
