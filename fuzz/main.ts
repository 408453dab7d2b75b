/**
 * `deno task fuzz [--seconds N] [--seed S] [--target NAME[,NAME…]] [--inputs N]`: fuzzes lib/ in process and
 * exits 1 with a reproducible report on the first broken invariant. Without --seed a random one is drawn and
 * printed.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { runFuzz } from "./runner.ts";
import { TARGETS } from "./targets.ts";

const USAGE = `Usage: deno task fuzz [--seconds N] [--seed S] [--target NAME[,NAME...]] [--inputs N]
targets: ${TARGETS.map(([n]) => n).join(", ")}
`;

function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        seconds: { type: "string", default: "60" },
        seed: { type: "string" },
        target: { type: "string", multiple: true },
        inputs: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const seconds = Number(values.seconds);
  const seed = values.seed !== undefined
    ? Number(values.seed)
    : crypto.getRandomValues(new Uint32Array(1))[0]!;
  const inputs = values.inputs !== undefined ? Number(values.inputs) : undefined;
  const names = (values.target ?? []).flatMap((t) => t.split(",")).filter((t) => t !== "");
  const unknown = names.filter((n) => !TARGETS.some(([t]) => t === n));
  if (
    !(seconds > 0) || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff || unknown.length > 0 ||
    (inputs !== undefined && !(inputs > 0))
  ) {
    process.stderr.write(`${unknown.length ? `unknown target ${unknown.join(", ")}\n` : ""}${USAGE}`);
    return 2;
  }
  const targets = names.length ? TARGETS.filter(([n]) => names.includes(n)) : TARGETS;
  process.stdout.write(`fuzz: seed ${seed}, ${seconds} s, targets ${targets.map(([n]) => n).join(", ")}\n`);
  const r = runFuzz({
    seed,
    seconds,
    targets,
    maxInputs: inputs,
    log: (l) => process.stdout.write(`  ${l}\n`),
  });
  let total = 0;
  for (const t of r.results) {
    total += t.inputs;
    const rate = t.seconds > 0 ? Math.round(t.inputs / t.seconds) : 0;
    const extra = Object.entries(t.stats).map(([k, v]) => `${k} ${v}`).join(", ");
    process.stdout.write(
      `${t.name.padEnd(12)} ${String(t.inputs).padStart(11)} inputs ${t.seconds.toFixed(1).padStart(7)} s ` +
        `${String(rate).padStart(9)}/s${extra ? `  (${extra})` : ""}\n`,
    );
  }
  process.stdout.write(`total ${total} inputs, seed ${seed}\n`);
  if (r.failure) {
    process.stderr.write(`${r.failure.report}\n`);
    return 1;
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
