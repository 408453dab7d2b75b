/**
 * The replay window (lib/replay.ts) against its BigInt model: the same counters to both, the same answers.
 * Counters are drawn around the places where a 64-bit sliding window can go wrong: the window's edges, the
 * word boundaries of the ring, the 2^32 carry between the halves, 2^53, and REJECT_AFTER_MESSAGES.
 * @module
 */
import { ReplayCounter } from "../lib/replay.ts";
import { COUNTER_BITS_TOTAL, COUNTER_WINDOW_SIZE } from "../lib/messages.ts";
import type { Prng } from "./prng.ts";
import { REJECT_AFTER_MESSAGES, ReplayModel } from "./replay_model.ts";
import { check, type Target } from "./target.ts";

const U64 = 2n ** 64n - 1n;

/** What the target needs of a replay window, so a test can hand it a broken one. */
export interface ReplayWindow {
  validate(lo: number, hi: number): boolean;
  reset(): void;
}

export function replayTarget(p: Prng, make: () => ReplayWindow = () => new ReplayCounter()): Target {
  let impl = make();
  const model = new ReplayModel();
  const input = new Uint8Array(8);
  const view = new DataView(input.buffer);
  let accepted = 0;

  const nextCounter = (): bigint => {
    const top = model.top;
    const offsets = [0n, 1n, -1n, BigInt(COUNTER_WINDOW_SIZE), BigInt(COUNTER_WINDOW_SIZE) + 1n];
    switch (p.below(10)) {
      case 0:
      case 1:
      case 2: // near the top, both sides
        return top + BigInt(p.int(-80, 80));
      case 3: // the edges of the window and of the ring
        return top - p.pick(offsets) -
          BigInt(p.pick([0, 1, 2, 63, 64, 65, COUNTER_BITS_TOTAL - COUNTER_WINDOW_SIZE]));
      case 4: // anywhere in the window
        return top - BigInt(p.below(COUNTER_BITS_TOTAL + 64));
      case 5: // jumps ahead, small and large
        return top + BigInt(p.below(p.chance(0.5) ? 2 * COUNTER_BITS_TOTAL : 2 ** 31)) * BigInt(p.int(1, 3));
      case 6: // around the 2^32 carry and 2^53
        return p.pick([2n ** 32n, 2n ** 53n, 2n ** 33n]) + BigInt(p.int(-70, 70));
      case 7: // around the end of the counter space
        return REJECT_AFTER_MESSAGES + BigInt(p.int(-COUNTER_BITS_TOTAL - 70, 70));
      case 8: // any 64-bit value
        return (BigInt(p.u32()) << 32n) | BigInt(p.u32());
      default:
        return BigInt(p.below(200));
    }
  };

  return {
    input,
    step() {
      if (p.chance(0.0005)) {
        impl = make();
        model.reset();
      }
      let c = nextCounter();
      if (c < 0n) c = -c;
      c &= U64;
      view.setBigUint64(0, c);
      const lo = Number(c & 0xffffffffn);
      const hi = Number(c >> 32n);
      const want = model.validate(c);
      const got = impl.validate(lo, hi);
      if (got) accepted++;
      check(
        got === want,
        () => `counter ${c}: lib says ${got ? "accept" : "reject"}, model ${want ? "accept" : "reject"}`,
      );
    },
    stats: () => ({ accepted }),
  };
}
