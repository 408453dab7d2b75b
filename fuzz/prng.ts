/**
 * The fuzzer's only source of randomness: xoshiro128** (Blackman and Vigna), seeded through splitmix32 from the
 * run's seed and the target's name. Every target draws from its own stream, so a target does the same inputs
 * in the same order whatever the other targets do and however the time is sliced: `--seed S --target T`
 * reproduces a failure at the iteration it reports.
 * @module
 */
import type { Rng } from "../lib/crypto.ts";

export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number, label = "") {
    // FNV-1a of the label, mixed with the seed, then splitmix32 to fill the state (never all zero).
    let h = 0x811c9dc5;
    for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
    let s = (seed ^ h) >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next() | 1;
  }

  /** A uniformly random unsigned 32-bit integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return r;
  }

  /** An integer in [0, n), n ≤ 2^32. */
  below(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() < p * 4294967296;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)]!;
  }

  /** A size biased towards small values and the edges: mostly below 64, sometimes up to `max`. */
  size(max: number): number {
    const r = this.below(8);
    if (r < 4) return this.below(Math.min(64, max + 1));
    if (r < 7) return this.below(max + 1);
    return this.chance(0.5) ? max : 0;
  }

  fill(out: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= out.length; i += 4) {
      const x = this.u32();
      out[i] = x;
      out[i + 1] = x >>> 8;
      out[i + 2] = x >>> 16;
      out[i + 3] = x >>> 24;
    }
    for (; i < out.length; i++) out[i] = this.u32();
    return out;
  }

  bytes(n: number): Uint8Array {
    return this.fill(new Uint8Array(n));
  }

  /** lib/'s Rng interface over this stream (keys, indices, nonces of the devices under test). */
  rng(): Rng {
    return (out) => void this.fill(out);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
