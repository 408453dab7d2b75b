/**
 * Runs fuzz targets for a time budget, round-robin in short slices, each target from its own seeded stream
 * (see prng.ts). The first failure stops the run and is reported with everything needed to reproduce it.
 * @module
 */
import { Prng } from "./prng.ts";
import { hexdump, type TargetFactory, Violation } from "./target.ts";

export interface FuzzOptions {
  /** Seed of every target's stream. */
  seed: number;
  /** Total wall-clock budget in seconds, shared equally by the targets. */
  seconds: number;
  /** Targets to run, by name, in order. */
  targets: [string, TargetFactory][];
  /** Stop each target after this many inputs (default: no limit). */
  maxInputs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface TargetResult {
  name: string;
  inputs: number;
  seconds: number;
  stats: Record<string, number>;
}

export interface FuzzFailure {
  target: string;
  iteration: number;
  error: unknown;
  input: Uint8Array | string;
  /** The whole report: seed, target, iteration, the error and a hex dump of the input. */
  report: string;
}

export interface FuzzResult {
  seed: number;
  results: TargetResult[];
  failure: FuzzFailure | null;
}

/** How long a target runs before the next one gets its turn. */
const SLICE_MS = 250;

export function runFuzz(opts: FuzzOptions): FuzzResult {
  const log = opts.log ?? (() => {});
  const max = opts.maxInputs ?? Infinity;
  const state = opts.targets.map(([name, make]) => ({
    name,
    make,
    target: null as ReturnType<TargetFactory> | null,
    result: { name, inputs: 0, seconds: 0, stats: {} } as TargetResult,
  }));
  const perTarget = (opts.seconds * 1000) / Math.max(1, state.length);
  let lastLog = performance.now();
  for (;;) {
    let ran = false;
    for (const s of state) {
      if (s.result.seconds * 1000 >= perTarget || s.result.inputs >= max) continue;
      ran = true;
      const start = performance.now();
      const end = start + Math.min(SLICE_MS, perTarget - s.result.seconds * 1000);
      try {
        s.target ??= s.make(new Prng(opts.seed, s.name));
        const t = s.target;
        // Check the time every few inputs only: some targets do a million inputs a second.
        do {
          for (let k = 0; k < 16 && s.result.inputs < max; k++) {
            t.step();
            s.result.inputs++;
          }
        } while (performance.now() < end && s.result.inputs < max);
      } catch (error) {
        s.result.seconds += (performance.now() - start) / 1000;
        const input = s.target?.input ?? "";
        return {
          seed: opts.seed,
          results: finish(state),
          failure: failure(opts.seed, s.name, s.result.inputs, error, input),
        };
      }
      s.result.seconds += (performance.now() - start) / 1000;
    }
    if (!ran) break;
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      log(state.map((s) => `${s.name} ${s.result.inputs}`).join(", "));
    }
  }
  return { seed: opts.seed, results: finish(state), failure: null };
}

function finish(state: { target: ReturnType<TargetFactory> | null; result: TargetResult }[]): TargetResult[] {
  for (const s of state) s.result.stats = s.target?.stats?.() ?? {};
  return state.map((s) => s.result);
}

function failure(
  seed: number,
  target: string,
  iteration: number,
  error: unknown,
  input: Uint8Array | string,
): FuzzFailure {
  const bytes = typeof input === "string" ? new TextEncoder().encode(input) : input;
  const kind = error instanceof Violation ? "invariant broken" : "unexpected exception";
  const what = error instanceof Error
    ? (error instanceof Violation ? error.message : error.stack ?? error.message)
    : String(error);
  const report = [
    `FUZZ FAILURE (${kind}) in target ${target} at iteration ${iteration}, seed ${seed}`,
    `  ${what.replaceAll("\n", "\n  ")}`,
    `input (${bytes.length} bytes):`,
    hexdump(bytes),
    `reproduce: deno task fuzz --seed ${seed} --target ${target} --inputs ${iteration + 1}`,
  ].join("\n");
  return { target, iteration, error, input, report };
}
