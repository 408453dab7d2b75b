/**
 * What every fuzz target implements, the error a broken invariant throws, and byte mutations shared by the
 * targets.
 * @module
 */
import type { Prng } from "./prng.ts";

/** One thing under test. `step` makes one input from the target's stream, runs it and checks the result. */
export interface Target {
  /** The input `step` is working on (bytes or text), for the failure report. Set it before running lib/. */
  readonly input: Uint8Array | string;
  step(): void;
  /** Counters worth printing after a run (e.g. how many inputs were delivered or accepted). */
  stats?(): Record<string, number>;
}

export type TargetFactory = (prng: Prng) => Target;

/** A broken invariant or a disagreement with a reference model (any other exception is a failure too). */
export class Violation extends Error {
  override name = "Violation";
}

export function check(ok: boolean, message: string | (() => string)): asserts ok {
  if (!ok) throw new Violation(typeof message === "string" ? message : message());
}

/** Lower-case hex of the bytes. */
export function hex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i]! < 16 ? "0" : "") + b[i]!.toString(16);
  return s;
}

/** A classic 16-bytes-per-line dump with offsets and printable characters (at most `max` bytes shown). */
export function hexdump(b: Uint8Array, max = 4096): string {
  const lines: string[] = [];
  const n = Math.min(b.length, max);
  for (let off = 0; off < n; off += 16) {
    const row = b.subarray(off, Math.min(off + 16, n));
    const h = [...row].map((x) => x.toString(16).padStart(2, "0")).join(" ");
    const t = [...row].map((x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${h.padEnd(47)}  |${t}|`);
  }
  if (b.length > n) lines.push(`... ${b.length - n} more bytes`);
  return lines.join("\n");
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x40, 0x20, 0x10, 0x0a, 0x3d, 0x5b, 0x5d, 0x23, 0x22];

/**
 * A mutated copy of `b` (one to a few edits: bit flips, interesting bytes, random bytes, truncation,
 * extension, duplication of a slice, or a splice with `other`). `keep` bytes at the front are left alone.
 */
export function mutate(p: Prng, b: Uint8Array, other?: Uint8Array, keep = 0): Uint8Array {
  let out = b.slice();
  const edits = 1 + p.below(p.chance(0.8) ? 2 : 8);
  for (let e = 0; e < edits; e++) {
    const span = out.length - keep;
    const at = keep + (span > 0 ? p.below(span) : 0);
    switch (p.below(8)) {
      case 0:
      case 1:
        if (span > 0) out[at] = out[at]! ^ (1 << p.below(8));
        break;
      case 2:
        if (span > 0) out[at] = p.pick(INTERESTING);
        break;
      case 3:
        if (span > 0) out.set(p.bytes(Math.min(span - (at - keep), 1 + p.below(8))), at);
        break;
      case 4:
        out = out.slice(0, keep + p.below(span + 1));
        break;
      case 5: {
        const grown = new Uint8Array(out.length + 1 + p.below(p.chance(0.9) ? 16 : 512));
        grown.set(out);
        p.fill(grown.subarray(out.length));
        out = grown;
        break;
      }
      case 6: {
        // Repeat a slice in place (length fields and duplicated records).
        if (span <= 0) break;
        const len = 1 + p.below(Math.min(32, out.length - at));
        const dup = new Uint8Array(out.length + len);
        dup.set(out.subarray(0, at + len));
        dup.set(out.subarray(at), at + len);
        out = dup;
        break;
      }
      default:
        if (other && other.length > 0 && span > 0) {
          const from = p.below(other.length);
          const len = Math.min(other.length - from, out.length - at, 1 + p.below(64));
          out.set(other.subarray(from, from + len), at);
        }
    }
  }
  return out;
}
