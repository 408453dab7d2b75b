/**
 * Builds the single executable `dist/typetun` (`deno task compile`, `npm run compile`).
 *
 * `deno compile` comes first: it embeds the runtime the code is developed and tested on. It needs the
 * matching `denort` runtime, which it downloads on first use (or takes from DENORT_BIN); where that cannot be
 * had, as on machines that reach only the npm registry, `bun build --compile` builds the binary offline from
 * the `bun` package that package.json pins. Either result must answer `genkey` before it replaces the old
 * binary, so a build that "succeeds" into something unusable (a wrong DENORT_BIN, say) falls through too.
 *
 * Usage: deno run -A scripts/compile.ts [--out PATH] [--runtime auto|deno|bun]
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const MAIN = resolve(ROOT, "main.ts");
/** deno compile's first run downloads denort (~100 MB): generous, but a black-holed network must not hang CI. */
const DENO_TIMEOUT_MS = 180_000;
const BUN_TIMEOUT_MS = 120_000;

const USAGE = `Usage: deno run -A scripts/compile.ts [--out PATH] [--runtime auto|deno|bun]

Builds the typetun executable (default dist/typetun). --runtime auto tries deno compile, then bun build
--compile; deno or bun uses only that one.
`;

export type Builder = "deno" | "bun";

/** A failed step, reduced to one line that says why. */
class BuildError extends Error {}

/** The runtime executables: this Deno when run by Deno, else the ones npm installed, else PATH. */
function tool(name: Builder): string {
  if (name === "deno" && typeof (globalThis as { Deno?: unknown }).Deno !== "undefined") {
    return process.execPath;
  }
  const local = resolve(ROOT, "node_modules/.bin", name);
  return existsSync(local) ? local : name;
}

/**
 * The root cause of a failed command in one line. deno prints "error: WHAT", then "Caused by:" and numbered
 * causes, outermost first; bun prints "error: WHAT" (run() turns colours off). When deno could not fetch its denort runtime, that is
 * what the line says, with the deepest cause (a DNS error, a refused connection, a 404…).
 */
export function whyFailed(stderr: string, status: number | null, signal: string | null): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter(Boolean);
  const causes = lines.filter((l) => /^\d+:\s/.test(l) && !/^\d+:\s*<unknown>$/.test(l))
    .map((l) => l.replace(/^\d+:\s*/, "").replace(/\.$/, ""));
  const deepest = causes.at(-1);
  const denort = stderr.match(/https?:\/\/\S*denort[^\s):]*/)?.[0];
  if (denort && deepest) return `could not download ${denort}: ${deepest}`;
  if (causes.length > 1) return `${causes[0]}: ${deepest}`;
  if (deepest) return deepest;
  const head = lines.find((l) => /^error\b/i.test(l))?.replace(/^error:\s*/i, "");
  return head ?? lines.at(-1) ?? (signal ? `killed by ${signal}` : `exit status ${status}`);
}

function run(cmd: string, args: string[], timeoutMs: number): void {
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    encoding: "utf8",
    timeout: timeoutMs,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (r.error) {
    const e = r.error as NodeJS.ErrnoException;
    if (e.code === "ETIMEDOUT") throw new BuildError(`gave up after ${timeoutMs / 1000} s`);
    if (e.code === "ENOENT") throw new BuildError(`${cmd} not found (run npm install)`);
    throw new BuildError(e.message);
  }
  if (r.status !== 0) throw new BuildError(whyFailed(r.stderr + r.stdout, r.status, r.signal));
}

/** The built binary must run: `genkey` prints one base64 key. */
function smokeTest(bin: string): void {
  const r = spawnSync(bin, ["genkey"], {
    encoding: "utf8",
    timeout: 30_000,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.status !== 0 || !/^[A-Za-z0-9+/]{43}=\n$/.test(r.stdout)) {
    const why = (r.stderr || r.stdout || r.error?.message || `exit status ${r.status}`).trim().split("\n")[0];
    throw new BuildError(`the built binary does not run (\`genkey\`: ${why})`);
  }
}

/** Why the last bun build fell back to plain source (no bytecode), for the report; null when it did not. */
let bytecodeFailure: string | null = null;

function build(builder: Builder, out: string): void {
  bytecodeFailure = null;
  if (builder === "deno") {
    // -A: the daemon opens libc through FFI, which grants everything anyway; narrower flags would only be a
    // list to keep in step with the code (it also reads env, spawns itself, and serves a unix socket).
    run(tool("deno"), ["compile", "-A", "--quiet", "--output", out, MAIN], DENO_TIMEOUT_MS);
  } else {
    // --bytecode: JavaScriptCore's bytecode is stored in the binary instead of being parsed from source at each
    // start; `genkey` took 30 ms without it and 10 ms with it, start → UAPI answers 54 → 29 ms (issue 13). It
    // needs a bundle without top-level await or import.meta (see main.ts and ffi/runtime.ts).
    // A bundle that cannot be made bytecode (a top-level await crept in) is still built, from source.
    try {
      run(tool("bun"), ["build", "--compile", "--bytecode", MAIN, "--outfile", out], BUN_TIMEOUT_MS);
    } catch (e) {
      if (!(e instanceof BuildError)) throw e;
      bytecodeFailure = e.message;
      run(tool("bun"), ["build", "--compile", MAIN, "--outfile", out], BUN_TIMEOUT_MS);
    }
  }
  smokeTest(out);
}

/**
 * Builds `out` with the first builder that works; returns which one, and why the ones before it failed.
 * The binary is built beside `out` and renamed over it only once it runs, so a failed build never leaves a
 * broken or half-written `out` (a running daemon started from the old one keeps its file, too).
 */
export function compile(out: string, builders: Builder[]): { builder: Builder; failures: string[] } {
  mkdirSync(dirname(out), { recursive: true });
  const failures: string[] = [];
  for (const builder of builders) {
    const tmp = `${out}.tmp-${process.pid}`;
    try {
      build(builder, tmp);
      renameSync(tmp, out);
      if (bytecodeFailure !== null) {
        failures.push(`bun build --compile --bytecode failed, built without bytecode: ${bytecodeFailure}`);
      }
      return { builder, failures };
    } catch (e) {
      if (!(e instanceof BuildError)) throw e;
      failures.push(`${builder === "deno" ? "deno compile" : "bun build --compile"} failed: ${e.message}`);
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  throw new Error(failures.join("; "));
}

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: "string", default: resolve(ROOT, "dist/typetun") },
        runtime: { type: "string", default: "auto" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    process.stderr.write(`compile: ${e instanceof Error ? e.message : e}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const order: Record<string, Builder[]> = { auto: ["deno", "bun"], deno: ["deno"], bun: ["bun"] };
  const builders = order[values.runtime];
  if (!builders) {
    process.stderr.write(`compile: --runtime must be auto, deno or bun, not "${values.runtime}"\n`);
    process.exit(2);
  }
  const out = resolve(values.out);
  try {
    const { builder, failures } = compile(out, builders);
    const how = builder === "deno"
      ? "deno compile"
      : failures.some((f) => f.includes("--bytecode"))
      ? "bun build --compile"
      : "bun build --compile --bytecode";
    const why = failures.length ? ` (${failures.join("; ")})` : "";
    process.stdout.write(`compile: built ${out} with ${how}${why}\n`);
  } catch (e) {
    process.stderr.write(`compile: could not build ${out}: ${e instanceof Error ? e.message : e}\n`);
    process.exit(1);
  }
}
