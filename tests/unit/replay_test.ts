import assert from "node:assert/strict";
import { ReplayCounter } from "../../lib/replay.ts";
import {
  COUNTER_WINDOW_SIZE,
  REJECT_AFTER_MESSAGES_HI,
  REJECT_AFTER_MESSAGES_LO,
} from "../../lib/messages.ts";

// Tests may use BigInt to write 64-bit counters plainly; the module under test never does.
const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;

function validate(c: ReplayCounter, n: number | bigint): boolean {
  const v = BigInt(n);
  return c.validate(Number(v & 0xffffffffn), Number(v >> 32n));
}

Deno.test("REJECT_AFTER_MESSAGES halves are 2^64 - 2^13 - 1", () => {
  assert.equal(
    BigInt(REJECT_AFTER_MESSAGES_HI) * 2n ** 32n + BigInt(REJECT_AFTER_MESSAGES_LO),
    REJECT_AFTER_MESSAGES,
  );
});

// The kernel's counter self-test (drivers/net/wireguard/selftest/counter.c), case for case. Each row is
// [counter, expected]; T_LIM is COUNTER_WINDOW_SIZE + 1 as there.
const T_LIM = COUNTER_WINDOW_SIZE + 1;
const KERNEL_TABLE: readonly (readonly [number | bigint, boolean])[] = [
  /*  1 */ [0, true],
  /*  2 */ [1, true],
  /*  3 */ [1, false],
  /*  4 */ [9, true],
  /*  5 */ [8, true],
  /*  6 */ [7, true],
  /*  7 */ [7, false],
  /*  8 */ [T_LIM, true],
  /*  9 */ [T_LIM - 1, true],
  /* 10 */ [T_LIM - 1, false],
  /* 11 */ [T_LIM - 2, true],
  /* 12 */ [2, true],
  /* 13 */ [2, false],
  /* 14 */ [T_LIM + 16, true],
  /* 15 */ [3, false],
  /* 16 */ [T_LIM + 16, false],
  /* 17 */ [T_LIM * 4, true],
  /* 18 */ [T_LIM * 4 - (T_LIM - 1), true],
  /* 19 */ [10, false],
  /* 20 */ [T_LIM * 4 - T_LIM, false],
  /* 21 */ [T_LIM * 4 - (T_LIM + 1), false],
  /* 22 */ [T_LIM * 4 - (T_LIM - 2), true],
  /* 23 */ [T_LIM * 4 + 1 - T_LIM, false],
  /* 24 */ [0, false],
  /* 25 */ [REJECT_AFTER_MESSAGES, false],
  /* 26 */ [REJECT_AFTER_MESSAGES - 1n, true],
  /* 27 */ [REJECT_AFTER_MESSAGES, false],
  /* 28 */ [REJECT_AFTER_MESSAGES - 1n, false],
  /* 29 */ [REJECT_AFTER_MESSAGES - 2n, true],
  /* 30 */ [REJECT_AFTER_MESSAGES + 1n, false],
  /* 31 */ [REJECT_AFTER_MESSAGES + 2n, false],
  /* 32 */ [REJECT_AFTER_MESSAGES - 2n, false],
  /* 33 */ [REJECT_AFTER_MESSAGES - 3n, true],
  /* 34 */ [0, false],
] as const;

Deno.test("kernel counter self-test table", () => {
  const c = new ReplayCounter();
  KERNEL_TABLE.forEach(([n, expected], i) => {
    assert.equal(validate(c, n), expected, `kernel case ${i + 1}: counter ${n}`);
  });
});

Deno.test("kernel bulk: forwards 1..WINDOW, then 0 once", () => {
  const c = new ReplayCounter();
  for (let i = 1; i <= COUNTER_WINDOW_SIZE; i++) assert.equal(validate(c, i), true, `counter ${i}`);
  assert.equal(validate(c, 0), true);
  assert.equal(validate(c, 0), false);
});

Deno.test("kernel bulk: forwards 2..WINDOW+1, then 1 in, 0 out", () => {
  const c = new ReplayCounter();
  for (let i = 2; i <= COUNTER_WINDOW_SIZE + 1; i++) assert.equal(validate(c, i), true, `counter ${i}`);
  assert.equal(validate(c, 1), true);
  assert.equal(validate(c, 0), false);
});

Deno.test("kernel bulk: backwards WINDOW..0", () => {
  const c = new ReplayCounter();
  for (let i = COUNTER_WINDOW_SIZE + 1; i-- > 0;) assert.equal(validate(c, i), true, `counter ${i}`);
});

Deno.test("kernel bulk: backwards WINDOW+1..1, then 0 out", () => {
  const c = new ReplayCounter();
  for (let i = COUNTER_WINDOW_SIZE + 2; i-- > 1;) assert.equal(validate(c, i), true, `counter ${i}`);
  assert.equal(validate(c, 0), false);
});

Deno.test("kernel bulk: backwards WINDOW..1, then WINDOW+1 in, 0 out", () => {
  const c = new ReplayCounter();
  for (let i = COUNTER_WINDOW_SIZE + 1; i-- > 1;) assert.equal(validate(c, i), true, `counter ${i}`);
  assert.equal(validate(c, COUNTER_WINDOW_SIZE + 1), true);
  assert.equal(validate(c, 0), false);
});

Deno.test("kernel bulk: backwards WINDOW..1, then 0 in, WINDOW+1 in", () => {
  const c = new ReplayCounter();
  for (let i = COUNTER_WINDOW_SIZE + 1; i-- > 1;) assert.equal(validate(c, i), true, `counter ${i}`);
  assert.equal(validate(c, 0), true);
  assert.equal(validate(c, COUNTER_WINDOW_SIZE + 1), true);
});

Deno.test("reset forgets seen counters and the window position", () => {
  const c = new ReplayCounter();
  assert.equal(validate(c, 100_000), true);
  assert.equal(validate(c, 5), false);
  c.reset();
  assert.equal(validate(c, 5), true);
  assert.equal(validate(c, 100_000), true);
  assert.equal(validate(c, 100_000), false);
});

Deno.test("window edge: exactly COUNTER_WINDOW_SIZE behind the top is accepted, one more is not", () => {
  const top = 1_000_000;
  const c = new ReplayCounter();
  assert.equal(validate(c, top), true);
  assert.equal(validate(c, top - COUNTER_WINDOW_SIZE - 1), false);
  assert.equal(validate(c, top - COUNTER_WINDOW_SIZE), true);
  assert.equal(validate(c, top - COUNTER_WINDOW_SIZE), false);
});

Deno.test("the window slides across the 32-bit boundary of the counter", () => {
  const base = 2n ** 32n;
  const c = new ReplayCounter();
  assert.equal(validate(c, base - 10n), true);
  assert.equal(validate(c, base + 5n), true); // carry into the high half
  assert.equal(validate(c, base - 1n), true); // older, but in the window
  assert.equal(validate(c, base - 10n), false);
  assert.equal(validate(c, base), true);
  assert.equal(validate(c, base), false);
  assert.equal(validate(c, base + BigInt(COUNTER_WINDOW_SIZE) + 4n), true);
  assert.equal(validate(c, base - 1n), false); // now too old
  assert.equal(validate(c, base + 4n), true); // exactly at the edge
  // A counter whose low half is 0xffffffff: n = counter + 1 carries.
  assert.equal(validate(c, 2n * base - 1n), true);
  assert.equal(validate(c, 2n * base - 1n), false);
  assert.equal(validate(c, 2n * base), true);
});

Deno.test("a jump far ahead clears stale bits in every ring word", () => {
  const c = new ReplayCounter();
  for (let i = 0; i < 9000; i++) validate(c, i);
  // 2^40 + i aliases the same ring slots as i; none of those may look already seen.
  const far = 2n ** 40n;
  for (let i = 8191; i >= 0; i -= 7) {
    assert.equal(validate(c, far + BigInt(i)), i >= 8191 - COUNTER_WINDOW_SIZE, `offset ${i}`);
  }
});

Deno.test("differences above 2^53 still compare correctly", () => {
  const c = new ReplayCounter();
  assert.equal(validate(c, REJECT_AFTER_MESSAGES - 1n), true);
  // 2^53 + 1 is not a double, but (hi, lo) carries it exactly; it is far behind the top.
  assert.equal(validate(c, 2n ** 53n + 1n), false);
  assert.equal(validate(c, 0), false);
  c.reset();
  assert.equal(validate(c, 2n ** 53n + 1n), true);
  assert.equal(validate(c, 2n ** 53n), true);
  assert.equal(validate(c, 2n ** 53n + 1n), false);
  assert.equal(validate(c, 2n ** 53n + 2n), true);
});

Deno.test("random order within the window agrees with a set-based reference", () => {
  // A small deterministic PRNG (xorshift32) so failures reproduce.
  let s = 0x9e3779b9;
  const rand = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const c = new ReplayCounter();
  const seen = new Set<number>();
  let top = -1;
  for (let i = 0; i < 50_000; i++) {
    // Mostly near the top, sometimes far behind or ahead, to exercise every branch.
    const r = rand() % 100;
    const delta = r < 70 ? (rand() % 200) - 150 : r < 90 ? -(rand() % 10_000) : rand() % 20_000;
    const n = Math.max(0, top + delta);
    const expected = !seen.has(n) && n + COUNTER_WINDOW_SIZE >= top;
    assert.equal(validate(c, n), expected, `step ${i}: counter ${n}, top ${top}`);
    if (expected) {
      seen.add(n);
      if (n > top) top = n;
    }
  }
});

Deno.test("garbage halves never throw", () => {
  const c = new ReplayCounter();
  for (const [lo, hi] of [[-1, -1], [NaN, NaN], [2 ** 40, 0], [0.5, 1.5], [Infinity, -Infinity]]) {
    assert.equal(typeof c.validate(lo!, hi!), "boolean");
  }
});
