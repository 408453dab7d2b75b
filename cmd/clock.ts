/**
 * The data loop's clock: the protocol's monotonic time, read once per round of the loop, and the wall clock.
 *
 * Reading the time once per round rather than once per packet: a round lasts microseconds, far below any
 * timer's resolution, and at 64-byte packets reading the clock per packet was a tenth of the time spent.
 * @module
 */
import { performance } from "node:perf_hooks";
import type { Clock } from "../lib/device.ts";

/** The clock the loop drives: `tick` at the start of each round, `msUntil` to size a wait. */
export interface LoopClock extends Clock {
  /** Reads the time for the round that starts; `now()` returns it until the next tick. */
  tick(): number;
  /** Real milliseconds from the last tick until protocol time `t` (0 if it has passed). */
  msUntil(t: number): number;
}

/**
 * The daemon's clock: performance.now() for the protocol, Date.now() for the wall (handshake timestamps, the
 * last-handshake time). `scale` (tests only, TYPETUN_TEST_TIME_SCALE) runs the protocol clock that many times
 * faster, so the paper's timers fire in seconds while the constants stay as written; the wall is never scaled.
 */
export class RoundClock implements LoopClock {
  #now = 0;

  constructor(readonly scale = 1) {
    this.tick();
  }

  now(): number {
    return this.#now;
  }

  wall(): number {
    return Date.now();
  }

  tick(): number {
    return this.#now = performance.now() * this.scale;
  }

  msUntil(t: number): number {
    return Math.max(0, Math.ceil((t - this.#now) / this.scale));
  }
}
