/**
 * The benchmark harness (`deno task bench`, `npm run bench`): one run measures, on the same topology, plain
 * veth (the ceiling), wireguard-go on both sides, typetun on both sides, and the mixed pairs. For each pair:
 * - TCP and UDP throughput (iperf3);
 * - ping RTT three ways: cold (the first 40 pings, 0.05 s apart, right after the first handshake of freshly
 *   started daemons, when a JIT has compiled little), idle (8 pings 0.5 s apart right after those: a tunnel
 *   that rests between packets) and loaded (pings during the bulk TCP transfer);
 * - start → UAPI (from spawning a daemon until its UAPI socket answers a get) and configuration → first
 *   handshake (from `wg set` and `ip link set up` having returned until the initiator reports a handshake);
 * - CPU seconds per GB moved: user+sys time of both daemons (/proc/PID/stat) over the TCP transfer, divided by
 *   the bytes iperf3 received. On a machine whose cores are shared this is steadier than throughput;
 * - each daemon's resident memory, idle after the handshake and after the load.
 * Before the pairs, how fast typetun starts (`genkey`, start → UAPI) per runtime. Optionally (`--scale`, or
 * `--only scale`), the 10,000-idle-peers case of tests/netns/scale_test.ts: TCP and ping through the one active
 * peer before and after both sides get 10,000 idle peers by `wg addconf`, and how long addconf and
 * `wg show dump` take.
 *
 * Topology: namespaces A and B joined by a veth pair (192.168.250.1/.2), a WireGuard interface in each
 * (10.250.0.1/.2, MTU 1420) configured with `wg set` through the UAPI; A sends, B receives. Each round builds
 * every pair's topology afresh (so each round has a cold start to measure), measures it and tears it down
 * before the next pair's: the rounds interleave the pairs, and a pair's figure is the median over rounds, so
 * the machine's noise hits all alike.
 *
 * Prints tables, writes bench/results.json (this run only, machine-readable) and puts a dated section at the
 * top of bench/RESULTS.md (the history stays below). Root is needed; traffic stays in the namespaces.
 * Everything the harness starts is killed by PID and its namespaces deleted on exit, on error and on Ctrl-C.
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { Buffer } from "node:buffer";
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { cpus, release } from "node:os";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { parseArgs } from "node:util";
import { have, isRoot, Lab, sleep, tag } from "../tests/netns/_lab.ts";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const SOCKET_DIR = "/var/run/wireguard";
const TUNNEL_MTU = 1420;
/** UDP payload that fits the tunnel MTU unfragmented: 1420 − 20 (IPv4) − 8 (UDP). */
const UDP_LEN = TUNNEL_MTU - 28;
const VETH = ["192.168.250.1", "192.168.250.2"] as const;
const INNER = ["10.250.0.1", "10.250.0.2"] as const;
const PORTS = [51901, 51902] as const;
const IPERF_PORT = 5201;

const USAGE = `Usage: deno task bench [options]   (deno run -A bench/harness.ts [options])

Measures plain veth, wireguard-go, typetun and mixed pairs between two network namespaces (needs root,
iperf3, wg, ping; wireguard-go for its rows): TCP and UDP throughput, ping cold / idle / under load, start →
UAPI, configuration → first handshake, CPU seconds per GB moved, resident memory.

Options:
  --rounds N        interleaved rounds over all pairs, each on fresh daemons (default 3)
  --time S          seconds per iperf3 run (default 5)
  --udp-rate RATE   iperf3 -u target rate (default 1G)
  --only LIST       comma-separated rows or groups: startup, scale, veth, wireguard-go, typetun, mixed,
                    typetun→wireguard-go, wireguard-go→typetun (ASCII -> works too), typetun(native)…
                    (scale alone: only the idle-peers case, on the wireguard-go and typetun pairs)
  --scale           also measure the 10,000-idle-peers case (about 30 s per pair and round) on the
                    selected pairs that run one implementation on both sides
  --bin PATH        the typetun to run (e.g. dist/typetun); default: deno run -A main.ts
  --baseline PATH   another typetun binary (e.g. a build of an older commit): adds the row
                    typetun(baseline), interleaved with the others, for before/after in one run
  --wg-go PATH      the reference peer; default: ../shared/tools/wireguard-go/wireguard-go (the
                    current release) when it is there, else wireguard-go on PATH
  --crypto LIST     run the typetun rows once per AEAD backend, passing TYPETUN_CRYPTO=<name> to the
                    daemon: --crypto noble,native gives rows typetun(noble) and typetun(native)
  --env K=V         extra environment for the typetun daemons (repeatable)
  --no-write        print only; leave bench/results.json and bench/RESULTS.md alone
  -h, --help        this help
`;

export class UsageError extends Error {}

export interface Options {
  rounds: number;
  time: number;
  udpRate: string;
  only: string[] | null;
  /** Measure the idle-peers case as well. */
  scale: boolean;
  typetun: string[];
  crypto: (string | null)[];
  /** A second typetun command for before/after rows, or null. */
  baseline: string[] | null;
  /** The wireguard-go to run. */
  wireguardGo: string;
  env: Record<string, string>;
  write: boolean;
}

export function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "3" },
      time: { type: "string", default: "5" },
      "udp-rate": { type: "string", default: "1G" },
      only: { type: "string" },
      scale: { type: "boolean", default: false },
      bin: { type: "string" },
      crypto: { type: "string" },
      baseline: { type: "string" },
      "wg-go": { type: "string" },
      env: { type: "string", multiple: true, default: [] },
      "no-write": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return null;
  const int = (name: string, v: string, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, not "${v}"`);
    }
    return n;
  };
  if (!/^\d+(\.\d+)?[KMG]?$/.test(values["udp-rate"])) {
    throw new UsageError(
      `--udp-rate must be a rate as iperf3 takes it (e.g. 500M, 1G), not "${values["udp-rate"]}"`,
    );
  }
  const env: Record<string, string> = {};
  for (const kv of values.env) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--env takes NAME=VALUE, not "${kv}"`);
    env[m[1]!] = m[2]!;
  }
  let typetun = ["deno", "run", "-A", resolve(ROOT, "main.ts")];
  if (values.bin !== undefined) {
    const bin = resolve(values.bin);
    if (!existsSync(bin)) {
      throw new UsageError(`--bin ${values.bin}: no such file (build it with deno task compile)`);
    }
    typetun = [bin];
  } else {
    typetun[0] = process.execPath; // the Deno running this harness, which need not be on PATH
  }
  const file = (flag: string, v: string) => {
    const path = resolve(v);
    if (!existsSync(path)) throw new UsageError(`--${flag} ${v}: no such file`);
    return path;
  };
  const baseline = values.baseline === undefined ? null : [file("baseline", values.baseline)];
  const currentGo = resolve(ROOT, "../shared/tools/wireguard-go/wireguard-go");
  const wireguardGo = values["wg-go"] !== undefined
    ? file("wg-go", values["wg-go"])
    : existsSync(currentGo)
    ? currentGo
    : "wireguard-go";
  const list = (v: string | undefined) => v?.split(",").map((s) => s.trim()).filter(Boolean);
  const crypto = list(values.crypto);
  for (const c of crypto ?? []) {
    if (!/^[a-z0-9_-]+$/i.test(c)) throw new UsageError(`--crypto: "${c}" is not a backend name`);
  }
  return {
    rounds: int("rounds", values.rounds, 1, 20),
    time: int("time", values.time, 1, 60),
    udpRate: values["udp-rate"],
    only: list(values.only)?.map((s) => s.replaceAll("->", "→")) ?? null,
    scale: values.scale,
    typetun,
    crypto: crypto?.length ? crypto : [null],
    baseline,
    wireguardGo,
    env,
    write: !values["no-write"],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Pairs

/** A typetun row runs opts.typetun, or opts.baseline when `baseline` is set. */
export type Impl = { kind: "typetun"; crypto: string | null; baseline?: boolean } | { kind: "wireguard-go" };

export interface Pair {
  name: string;
  groups: string[];
  /** Sender side A and receiver side B; null for plain veth. */
  a: Impl | null;
  b: Impl | null;
}

function implName(i: Impl): string {
  if (i.kind === "typetun" && i.baseline) return "typetun(baseline)";
  return i.kind === "typetun" && i.crypto ? `typetun(${i.crypto})` : i.kind;
}

export function allPairs(crypto: (string | null)[], baseline: boolean): Pair[] {
  const go: Impl = { kind: "wireguard-go" };
  const tts: Impl[] = crypto.map((c) => ({ kind: "typetun", crypto: c }));
  const pairs: Pair[] = [
    { name: "veth", groups: ["veth"], a: null, b: null },
    { name: "wireguard-go", groups: ["wireguard-go"], a: go, b: go },
  ];
  for (const t of tts) pairs.push({ name: implName(t), groups: ["typetun"], a: t, b: t });
  if (baseline) {
    const b: Impl = { kind: "typetun", crypto: null, baseline: true };
    pairs.push({ name: implName(b), groups: ["typetun"], a: b, b: b });
  }
  for (const t of tts) {
    pairs.push({ name: `${implName(t)}→wireguard-go`, groups: ["mixed"], a: t, b: go });
    pairs.push({ name: `wireguard-go→${implName(t)}`, groups: ["mixed"], a: go, b: t });
  }
  return pairs;
}

export interface Selection {
  /** The pairs of the regular rounds. */
  pairs: Pair[];
  startup: boolean;
  /** The pairs the idle-peers case runs on: those with one implementation on both sides. */
  scale: Pair[];
}

export function selectPairs(pairs: Pair[], only: string[] | null, scale: boolean): Selection {
  const homogeneous = (p: Pair) => p.a !== null && p.b !== null && implName(p.a) === implName(p.b);
  if (only === null) return { pairs, startup: true, scale: scale ? pairs.filter(homogeneous) : [] };
  const known = new Set(["startup", "scale", ...pairs.flatMap((p) => [p.name, ...p.groups])]);
  // "typetun→wireguard-go" names the mixed rows of every crypto variant when --crypto is given.
  const generic = (n: string) => n.replace(/typetun\([^)]*\)/g, "typetun");
  for (const o of only) {
    if (!known.has(o) && !pairs.some((p) => generic(p.name) === o)) {
      throw new UsageError(`--only: unknown row "${o}"; rows and groups: ${[...known].join(", ")}`);
    }
  }
  const named = only.filter((o) => o !== "startup" && o !== "scale");
  const chosen = pairs.filter((p) =>
    named.some((o) => o === p.name || p.groups.includes(o) || generic(p.name) === o)
  );
  return {
    pairs: chosen,
    startup: only.includes("startup"),
    scale: scale || only.includes("scale") ? (named.length ? chosen : pairs).filter(homogeneous) : [],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Processes and the UAPI

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop (so Ctrl-C is served); kills it after `timeoutMs`. */
function exec(cmd: string, args: string[], timeoutMs: number): Promise<Result> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    running.add(child);
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs / 1000} s)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      stderr += e.message;
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      running.delete(child);
      done({ status, stdout, stderr });
    });
  });
}

async function inNs(ns: string, cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  const r = await exec("ip", ["netns", "exec", ns, cmd, ...args], timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${firstLine(r.stderr || r.stdout)}`);
  return r.stdout;
}

async function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  const r = await exec(cmd, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${firstLine(r.stderr || r.stdout)}`);
  return r.stdout;
}

function firstLine(s: string): string {
  return s.trim().split("\n").find((l) => l.trim() && !/^[┌│└]/.test(l))?.trim() ?? "(no output)";
}

/** One UAPI `get=1` on a socket; the reply's key=value lines, or null while nothing answers. */
function uapiGet(ifname: string, timeoutMs = 1000): Promise<Map<string, string> | null> {
  return new Promise((done) => {
    const s = connect(`${SOCKET_DIR}/${ifname}.sock`);
    let buf = "";
    const finish = (v: Map<string, string> | null) => {
      clearTimeout(timer);
      s.destroy();
      done(v);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    s.on("connect", () => s.write("get=1\n\n"));
    s.on("data", (d) => {
      buf += d.toString();
      if (!/errno=-?\d+\n\n$/.test(buf)) return;
      const m = new Map<string, string>();
      for (const l of buf.split("\n")) {
        const i = l.indexOf("=");
        if (i > 0) m.set(l.slice(0, i), l.slice(i + 1));
      }
      finish(m.get("errno") === "0" ? m : null);
    });
    s.on("error", () => finish(null));
  });
}

/** Polls the UAPI every few milliseconds until it answers; the time that took, or an error. */
async function untilReady(ifname: string, child: ChildProcess, log: () => string, limitMs = 15_000) {
  const t0 = performance.now();
  while (performance.now() - t0 < limitMs) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${ifname}: the daemon exited: ${firstLine(log())}`);
    }
    if (existsSync(`${SOCKET_DIR}/${ifname}.sock`) && (await uapiGet(ifname, 500)) !== null) return;
    await sleep(3);
  }
  throw new Error(`${ifname}: the UAPI did not answer within ${limitMs / 1000} s: ${firstLine(log())}`);
}

/** Resident and peak memory of a process, in MiB. */
function memory(pid: number): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN);
    return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
  } catch {
    return null;
  }
}

// Everything started here, for the cleanup.
const labs = new Set<Lab>();
const running = new Set<ChildProcess>();

function cleanupAll(): void {
  for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const lab of labs) lab.cleanup();
  labs.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Measurements

function median(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => Number.isFinite(x)).sort((p, q) => p - q);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

function mean(xs: number[]): number | null {
  return xs.length ? xs.reduce((p, q) => p + q, 0) / xs.length : null;
}

/** One run of pings: the median and mean RTT of those answered, and the share lost. */
export interface Pings {
  medianMs: number | null;
  avgMs: number | null;
  lossPercent: number;
  sent: number;
}

interface Memory {
  rss: number;
  hwm: number;
}

/** A daemon of one round's topology. */
interface Side {
  impl: Impl;
  ifname: string;
  child: ChildProcess;
  log: () => string;
  /** From spawning the daemon until its UAPI socket answered a get. */
  readyMs: number;
}

/** One round's topology of a pair: its namespaces, its daemons, and the address B answers on. */
interface Topology {
  lab: Lab;
  ns: [string, string];
  sides: Side[];
  target: string;
  /** From the configuration having returned until the initiator reported the first handshake. */
  handshakeMs?: number;
}

/** The daemons' CPU time over one TCP transfer, and what the transfer moved. */
interface CpuRun {
  /** user+sys seconds of A and of B. */
  seconds: number[];
  gb: number;
  secondsPerGB: number;
}

/** What a pair collected over the rounds. */
interface PairRun {
  pair: Pair;
  status: "ok" | "skipped" | "failed";
  why?: string;
  tcp: number[];
  udp: { mbps: number; loss: number }[];
  cold: Pings[];
  idle: Pings[];
  loaded: Pings[];
  /** Start → UAPI of A and of B, one entry per round. */
  ready: [number[], number[]];
  handshake: number[];
  cpu: CpuRun[];
  memIdle: [Memory[], Memory[]];
  memLoaded: [Memory[], Memory[]];
  /** The transport AEAD each side's daemon reported (first round). */
  aead: string[];
  errors: string[];
}

function newPairRun(pair: Pair): PairRun {
  return {
    pair,
    status: "ok",
    tcp: [],
    udp: [],
    cold: [],
    idle: [],
    loaded: [],
    ready: [[], []],
    handshake: [],
    cpu: [],
    memIdle: [[], []],
    memLoaded: [[], []],
    aead: [],
    errors: [],
  };
}

/** Whether the wireguard-go to run is there (a path, or a name on PATH). */
function haveGo(opts: Options): boolean {
  return opts.wireguardGo.includes("/") ? existsSync(opts.wireguardGo) : have(opts.wireguardGo);
}

function needs(pair: Pair, opts: Options): string | null {
  const impls = [pair.a, pair.b].filter((i): i is Impl => i !== null);
  if (impls.length && !have("wg")) return "wg not installed (wireguard-tools configures the daemons)";
  if (impls.some((i) => i.kind === "wireguard-go") && !haveGo(opts)) {
    return "wireguard-go not installed";
  }
  return null;
}

async function startDaemon(lab: Lab, ns: string, impl: Impl, opts: Options): Promise<Side> {
  const ifname = `bw${tag()}`;
  const [cmd, ...args] = impl.kind === "wireguard-go"
    ? [opts.wireguardGo]
    : impl.baseline && opts.baseline
    ? opts.baseline
    : opts.typetun;
  const env: Record<string, string> = { ...process.env as Record<string, string> };
  if (impl.kind === "typetun") {
    Object.assign(env, { LOG_LEVEL: "info" }, opts.env);
    if (impl.crypto) env.TYPETUN_CRYPTO = impl.crypto;
  } else {
    env.LOG_LEVEL = "error";
  }
  const t0 = performance.now();
  // `ip netns exec` execs the command in place, so child.pid is the daemon's own PID (memory, CPU).
  const child = spawn("ip", ["netns", "exec", ns, cmd!, ...args, "-f", ifname], {
    stdio: ["ignore", "ignore", "pipe"],
    env,
  });
  lab.children.push(child);
  lab.sockets.push(`${SOCKET_DIR}/${ifname}.sock`);
  let log = "";
  child.stderr!.on("data", (d) => {
    if (log.length < 64 * 1024) log += d.toString();
  });
  await untilReady(ifname, child, () => log);
  return { impl, ifname, child, log: () => log, readyMs: performance.now() - t0 };
}

/** `wg set` with the private key passed through a file, as wg requires. */
async function wgSet(ifname: string, key: string, args: string[]): Promise<void> {
  const f = `/tmp/typetun-bench-${tag()}.key`;
  writeFileSync(f, key + "\n", { mode: 0o600 });
  try {
    await run("wg", ["set", ifname, "private-key", f, ...args]);
  } finally {
    rmSync(f, { force: true });
  }
}

async function keyPair(): Promise<{ priv: string; pub: string }> {
  const priv = (await run("wg", ["genkey"])).trim();
  const r = spawnSync("wg", ["pubkey"], { input: priv + "\n", encoding: "utf8" });
  return { priv, pub: r.stdout.trim() };
}

/**
 * A fresh topology for a pair: namespaces, veth, both daemons, `wg set`, addresses; then a packet for the peer
 * and the time until the first handshake completes. Torn down again if any step fails.
 */
async function setUp(pair: Pair, opts: Options): Promise<Topology> {
  const lab = new Lab();
  labs.add(lab);
  try {
    const t = tag();
    const nsA = lab.ns(`tbA${t}`), nsB = lab.ns(`tbB${t}`);
    lab.veth(nsA, nsB, [VETH[0], "fd00:250::1"], [VETH[1], "fd00:250::2"]);
    const topo: Topology = { lab, ns: [nsA, nsB], sides: [], target: VETH[1] };
    const { a, b } = pair;
    if (a === null || b === null) return topo;
    topo.target = INNER[1];
    const [kA, kB] = await Promise.all([keyPair(), keyPair()]);
    // One after the other, so that neither start-up (start → UAPI) competes with the other's for the CPU.
    topo.sides = [await startDaemon(lab, nsA, a, opts), await startDaemon(lab, nsB, b, opts)];
    const [A, B] = topo.sides as [Side, Side];
    await Promise.all([
      wgSet(A.ifname, kA.priv, [
        "listen-port",
        `${PORTS[0]}`,
        "peer",
        kB.pub,
        "allowed-ips",
        `${INNER[1]}/32`,
        "endpoint",
        `${VETH[1]}:${PORTS[1]}`,
      ]),
      wgSet(B.ifname, kB.priv, [
        "listen-port",
        `${PORTS[1]}`,
        "peer",
        kA.pub,
        "allowed-ips",
        `${INNER[0]}/32`,
      ]),
    ]);
    for (const [ns, side, addr] of [[nsA, A, INNER[0]], [nsB, B, INNER[1]]] as const) {
      await run("ip", ["-n", ns, "addr", "add", `${addr}/24`, "dev", side.ifname]);
      await run("ip", ["-n", ns, "link", "set", side.ifname, "mtu", `${TUNNEL_MTU}`, "up"]);
    }
    // Configured. The first packet for the peer starts the handshake (ping sends its first one at once);
    // A's UAPI says when it completed, which includes the time ping takes to start (a few ms).
    const t0 = performance.now();
    const pinger = spawn(
      "ip",
      ["netns", "exec", nsA, "ping", "-c", "200", "-i", "0.05", "-W", "1", INNER[1]],
      {
        stdio: "ignore",
      },
    );
    lab.children.push(pinger);
    try {
      for (;;) {
        const info = await uapiGet(A.ifname);
        if (Number(info?.get("last_handshake_time_sec") ?? 0) > 0) break;
        if (performance.now() - t0 > 10_000) throw new Error("no handshake within 10 s");
        await sleep(1);
      }
      topo.handshakeMs = performance.now() - t0;
    } finally {
      pinger.kill("SIGKILL");
    }
    return topo;
  } catch (e) {
    tearDown(lab);
    throw e;
  }
}

function tearDown(lab: Lab): void {
  lab.cleanup();
  labs.delete(lab);
}

/** The backend a typetun daemon reports using (a log line naming the AEAD), not the one requested. */
function aeadOf(s: Side): string {
  if (s.impl.kind !== "typetun") return "Go (golang.org/x/crypto)";
  const line = /^.*\b(AEAD|crypto)\b.*$/im.exec(s.log())?.[0];
  const requested = s.impl.crypto ? ` (TYPETUN_CRYPTO=${s.impl.crypto} was set)` : "";
  return line ? line.replace(/^\w+: \([^)]*\) [\d-]+ [\d:]+ /, "") : `not logged${requested}`;
}

async function iperfServer(topo: Topology): Promise<void> {
  const nsB = topo.ns[1];
  const child = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", `${IPERF_PORT}`], {
    stdio: "ignore",
  });
  topo.lab.children.push(child);
  for (let i = 0; i < 100; i++) {
    const ss = await run("ip", ["netns", "exec", nsB, "ss", "-Hltn", `sport = :${IPERF_PORT}`]);
    if (ss.trim()) return;
    if (child.exitCode !== null) break;
    await sleep(20);
  }
  throw new Error("iperf3 server did not start");
}

/**
 * One TCP transfer A → B: Mbit/s and bytes, as the receiver counted them over `seconds`, after `omit`
 * seconds left out (iperf3 -O: slow start, and a JIT compiling the path).
 */
async function tcp(topo: Topology, seconds: number, omit = 0): Promise<{ mbps: number; bytes: number }> {
  const out = await inNs(topo.ns[0], "iperf3", [
    "-c",
    topo.target,
    "-p",
    `${IPERF_PORT}`,
    "-t",
    `${seconds}`,
    "-O",
    `${omit}`,
    "-J",
  ], (omit + seconds + 30) * 1000);
  const received = JSON.parse(out).end.sum_received;
  return { mbps: received.bits_per_second / 1e6, bytes: received.bytes };
}

/** Seconds a TCP run of `time` seconds leaves out at its start: 1 (as issue 13 measured), none in a 1 s run. */
const omitted = (time: number) => (time >= 2 ? 1 : 0);

async function udp(topo: Topology, opts: Options): Promise<{ mbps: number; loss: number }> {
  const out = await inNs(topo.ns[0], "iperf3", [
    "-c",
    topo.target,
    "-p",
    `${IPERF_PORT}`,
    "-u",
    "-b",
    opts.udpRate,
    "-l",
    `${UDP_LEN}`,
    "-t",
    `${opts.time}`,
    "-J",
  ], (opts.time + 30) * 1000);
  const end = JSON.parse(out).end;
  return { mbps: end.sum_received.bits_per_second / 1e6, loss: end.sum.lost_percent };
}

/** `count` pings `interval` s apart from A to B; each RTT as ping printed it. */
async function ping(topo: Topology, count: number, interval: number): Promise<Pings> {
  const args = [
    "netns",
    "exec",
    topo.ns[0],
    "ping",
    "-c",
    `${count}`,
    "-i",
    `${interval}`,
    "-W",
    "1",
    topo.target,
  ];
  // Not inNs: ping exits non-zero when a reply is missing, and a lost ping is a result too.
  const r = await exec("ip", args, (count * interval + 15) * 1000);
  return parsePing(r.stdout, r.stderr);
}

/** The figures of one ping run from its output (iputils); throws if it sent nothing or got no answer. */
export function parsePing(stdout: string, stderr = ""): Pings {
  // Duplicates ("DUP!") are the same packet answered twice, not another RTT.
  const rtts = [...stdout.matchAll(/time=([\d.]+) ms(?! \(DUP!\))/g)].map((m) => Number(m[1]));
  const sent = Number(/(\d+) packets transmitted/.exec(stdout)?.[1] ?? NaN);
  if (!Number.isFinite(sent)) throw new Error(`ping: ${firstLine(stderr || stdout)}`);
  if (rtts.length === 0) throw new Error(`ping: none of ${sent} answered`);
  return {
    medianMs: median(rtts),
    avgMs: mean(rtts),
    lossPercent: 100 * Math.max(0, 1 - rtts.length / sent),
    sent,
  };
}

/** user+sys CPU seconds a process has used, all its threads together (/proc/PID/stat fields 14 and 15). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and brackets: the fields after it start at the last ')'.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

const CLOCK_TICKS = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && n > 0 ? n : 100;
})();

/**
 * The TCP transfer of a round, with pings under load alongside and the daemons' CPU time. Both start when the
 * omitted first second is over (in a 1 s run, after 0.3 s), so that they see the transfer at full speed
 * rather than in slow start, and cover what iperf3 counts.
 */
async function tcpUnderLoad(r: PairRun, topo: Topology, round: number, opts: Options): Promise<void> {
  const omit = omitted(opts.time);
  const delay = omit || 0.3 * opts.time;
  const count = Math.max(5, Math.floor((omit + opts.time - delay - 0.3) / 0.05));
  const pids = topo.sides.map((s) => s.child.pid!);
  // CPU time counts over what iperf3 counts: from the end of the omitted second (as this process sees it,
  // a few ms off the client's) or from the start.
  let before = omit ? [] : pids.map(cpuSeconds);
  const loaded = sleep(delay * 1000).then(() => {
    if (omit) before = pids.map(cpuSeconds);
    return attempt(r, `round ${round} ping under load`, () => ping(topo, count, 0.05));
  });
  const t = await attempt(r, `round ${round} TCP`, () => tcp(topo, opts.time, omit));
  const after = pids.map(cpuSeconds);
  const p = await loaded;
  if (p !== undefined) r.loaded.push(p);
  if (t === undefined) return;
  r.tcp.push(t.mbps);
  if (pids.length === 0) return;
  const seconds = pids.map((_, i) => after[i]! - before[i]!);
  const gb = t.bytes / 1e9;
  const total = seconds.reduce((x, y) => x + y, 0);
  if (Number.isFinite(total) && gb > 0) r.cpu.push({ seconds, gb, secondsPerGB: total / gb });
}

/** One round of a pair, on a fresh topology: cold and idle pings first, then the load; then it is torn down. */
async function measureRound(r: PairRun, round: number, opts: Options, iperf: boolean): Promise<void> {
  const topo = await setUp(r.pair, opts);
  try {
    topo.sides.forEach((s, i) => r.ready[i]!.push(s.readyMs));
    if (topo.handshakeMs !== undefined) r.handshake.push(topo.handshakeMs);
    if (r.aead.length === 0) r.aead = topo.sides.map(aeadOf);
    const cold = await attempt(r, `round ${round} cold ping`, () => ping(topo, 40, 0.05));
    if (cold !== undefined) r.cold.push(cold);
    const idle = await attempt(r, `round ${round} idle ping`, () => ping(topo, 8, 0.5));
    if (idle !== undefined) r.idle.push(idle);
    const memories = () => topo.sides.map((s) => memory(s.child.pid!));
    memories().forEach((m, i) => m && r.memIdle[i]!.push(m));
    if (!iperf) return;
    const served = await attempt(r, `round ${round} iperf3 server`, () => iperfServer(topo).then(() => true));
    if (!served) return;
    await tcpUnderLoad(r, topo, round, opts);
    const u = await attempt(r, `round ${round} UDP`, () => udp(topo, opts));
    if (u !== undefined) r.udp.push(u);
    memories().forEach((m, i) => m && r.memLoaded[i]!.push(m));
  } finally {
    tearDown(topo.lab);
  }
}

/** Runs `f`, recording a failure in the pair's errors instead of ending the run. */
async function attempt<T>(
  r: { errors: string[] },
  what: string,
  f: () => Promise<T>,
): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    r.errors.push(`${what}: ${e instanceof Error ? e.message : e}`);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scale: 10,000 idle peers on both sides (as tests/netns/scale_test.ts)

const IDLE_PEERS = 10_000;

interface ScaleRun {
  tcpWithoutMbps: number;
  tcpWithMbps: number;
  pingWithout: Pings;
  pingWith: Pings;
  /** `wg addconf` of the idle peers, A and B, in seconds. */
  addconfSeconds: number[];
  /** `wg show IF dump`, A and B, in seconds. */
  dumpSeconds: number[];
  /** Peers in A's dump: 1 + IDLE_PEERS when all were taken. */
  peersListed: number;
}

interface ScaleStats {
  pair: Pair;
  status: "ok" | "failed";
  why?: string;
  runs: ScaleRun[];
  errors: string[];
}

/**
 * A `wg addconf` file of IDLE_PEERS peers: random public keys, one /32 each from 10.100.0.0/14 (apart from the
 * tunnel's 10.250.0.0/24), and TEST-NET-3 endpoints, never written to since these peers stay idle.
 */
function idlePeersConf(): string {
  const keys = new Uint8Array(32 * IDLE_PEERS);
  for (let off = 0; off < keys.length; off += 65536) crypto.getRandomValues(keys.subarray(off, off + 65536));
  const lines: string[] = [];
  for (let i = 0; i < IDLE_PEERS; i++) {
    const key = Buffer.from(keys.buffer, 32 * i, 32).toString("base64");
    const ip = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    lines.push(`[Peer]`, `PublicKey = ${key}`, `AllowedIPs = ${ip}/32`);
    lines.push(`Endpoint = 203.0.113.${1 + (i % 254)}:${10000 + i}`, "");
  }
  return lines.join("\n");
}

async function timedRun(cmd: string, args: string[]): Promise<{ seconds: number; out: string }> {
  const t0 = performance.now();
  const out = await run(cmd, args, 120_000);
  return { seconds: (performance.now() - t0) / 1000, out };
}

/** One round of the idle-peers case, on a fresh topology: TCP and ping before and after `wg addconf`. */
async function measureScale(pair: Pair, opts: Options): Promise<ScaleRun> {
  const topo = await setUp(pair, opts);
  const conf = `/tmp/typetun-bench-${tag()}-peers.conf`;
  try {
    writeFileSync(conf, idlePeersConf());
    await iperfServer(topo);
    await tcp(topo, 1); // warm-up: the hot paths compiled before either phase
    const tcpWithout = await tcp(topo, opts.time, omitted(opts.time));
    const pingWithout = await ping(topo, 20, 0.05);
    const addconf: number[] = [], dump: number[] = [];
    let peersListed = 0;
    for (const [i, s] of topo.sides.entries()) {
      addconf.push((await timedRun("wg", ["addconf", s.ifname, conf])).seconds);
      const d = await timedRun("wg", ["show", s.ifname, "dump"]);
      dump.push(d.seconds);
      if (i === 0) peersListed = d.out.trim().split("\n").length - 1;
    }
    await sleep(200);
    const tcpWith = await tcp(topo, opts.time, omitted(opts.time));
    const pingWith = await ping(topo, 20, 0.05);
    return {
      tcpWithoutMbps: tcpWithout.mbps,
      tcpWithMbps: tcpWith.mbps,
      pingWithout,
      pingWith,
      addconfSeconds: addconf,
      dumpSeconds: dump,
      peersListed,
    };
  } finally {
    rmSync(conf, { force: true });
    tearDown(topo.lab);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Startup: how long until typetun answers

interface Startup {
  command: string;
  genkeyMs: number | null;
  daemonReadyMs: number | null;
  runs: number;
  error?: string;
}

async function startupOf(label: string, cmd: string[], opts: Options, withGenkey: boolean): Promise<Startup> {
  const res: Startup = { command: label, genkeyMs: null, daemonReadyMs: null, runs: 0 };
  try {
    if (withGenkey) {
      const times: number[] = [];
      for (let i = 0; i < 7; i++) {
        const t0 = performance.now();
        await run(cmd[0]!, [...cmd.slice(1), "genkey"], 30_000);
        times.push(performance.now() - t0);
      }
      res.genkeyMs = median(times);
    }
    const lab = new Lab();
    labs.add(lab);
    try {
      const ns = lab.ns(`tbS${tag()}`);
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const impl: Impl = cmd[0] === opts.wireguardGo
          ? { kind: "wireguard-go" }
          : { kind: "typetun", crypto: null };
        const side = await startDaemon(lab, ns, impl, { ...opts, typetun: cmd });
        times.push(side.readyMs);
        side.child.kill("SIGTERM");
        for (let w = 0; w < 100 && side.child.exitCode === null && side.child.signalCode === null; w++) {
          await sleep(20);
        }
        res.runs++;
      }
      res.daemonReadyMs = median(times);
    } finally {
      lab.cleanup();
      labs.delete(lab);
    }
  } catch (e) {
    res.error = e instanceof Error ? e.message : String(e);
  }
  return res;
}

async function measureStartup(opts: Options): Promise<Startup[]> {
  const cmds: [string, string[], boolean][] = [
    ["deno run -A main.ts", [process.execPath, "run", "-A", resolve(ROOT, "main.ts")], true],
  ];
  const bun = resolve(ROOT, "node_modules/.bin/bun");
  if (existsSync(bun)) cmds.push(["bun main.ts", [bun, resolve(ROOT, "main.ts")], true]);
  const compiled = opts.typetun.length === 1 ? opts.typetun[0]! : resolve(ROOT, "dist/typetun");
  if (existsSync(compiled)) cmds.push([compiled.replace(ROOT + "/", ""), [compiled], true]);
  if (haveGo(opts)) cmds.push(["wireguard-go", [opts.wireguardGo], false]);
  const out: Startup[] = [];
  for (const [label, cmd, genkey] of cmds) out.push(await startupOf(label, cmd, opts, genkey));
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Report

/** A file's modification time, as "YYYY-MM-DD HH:MM UTC". */
function builtAt(path: string): string | null {
  try {
    return statSync(path).mtime.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  } catch {
    return null;
  }
}

function hostInfo(opts: Options) {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const version = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
    return r.status === 0 ? firstLine(r.stdout || r.stderr) : null;
  };
  const bun = resolve(ROOT, "node_modules/.bin/bun");
  const git = spawnSync("git", ["-C", ROOT, "describe", "--always", "--dirty"], { encoding: "utf8" });
  return {
    cpu,
    cores: cpus().length,
    kernel: release(),
    deno: process.versions.deno ?? null,
    bun: existsSync(bun) ? version(bun, ["--version"]) : null,
    wireguardGo: haveGo(opts) ? version(opts.wireguardGo, ["--version"]) : null,
    iperf3: have("iperf3") ? version("iperf3", ["--version"]) : null,
    typetunCommit: git.status === 0 ? git.stdout.trim() : null,
    typetunCommand: opts.typetun.length === 1
      ? opts.typetun[0]!.replace(ROOT + "/", "")
      : `deno run -A main.ts (deno at ${opts.typetun[0]!.replace(ROOT + "/", "")})`,
    // A compiled binary need not be of the checkout's commit: when it was built says which it can be.
    typetunBuilt: opts.typetun.length === 1 ? builtAt(opts.typetun[0]!) : null,
    baselineBuilt: opts.baseline ? builtAt(opts.baseline[0]!) : null,
    loadAverage: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
  };
}

const f0 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(0));
const f1 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(1));
const f2 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(2));

function pingSummary(runs: Pings[]) {
  return {
    medianMs: median(runs.map((p) => p.medianMs)),
    avgMs: median(runs.map((p) => p.avgMs)),
    lossPercent: median(runs.map((p) => p.lossPercent)),
    runs,
  };
}

function summary(r: PairRun) {
  const tcpSorted = [...r.tcp].sort((p, q) => p - q);
  const sides = [r.pair.a, r.pair.b].filter((i): i is Impl => i !== null);
  return {
    name: r.pair.name,
    status: r.status,
    why: r.why ?? null,
    tcpMbps: { median: median(r.tcp), min: tcpSorted[0] ?? null, max: tcpSorted.at(-1) ?? null, runs: r.tcp },
    udp: {
      receivedMbps: median(r.udp.map((u) => u.mbps)),
      lossPercent: median(r.udp.map((u) => u.loss)),
      runs: r.udp,
    },
    ping: { cold: pingSummary(r.cold), idle: pingSummary(r.idle), loaded: pingSummary(r.loaded) },
    configToHandshakeMs: { median: median(r.handshake), runs: r.handshake },
    cpuSecondsPerGB: { median: median(r.cpu.map((c) => c.secondsPerGB)), runs: r.cpu },
    daemons: sides.map((impl, i) => ({
      side: i === 0 ? "A (sender)" : "B (receiver)",
      impl: implName(impl),
      aead: r.aead[i] ?? null,
      startToUapiMs: { median: median(r.ready[i]!), runs: r.ready[i]! },
      rssIdleMiB: median(r.memIdle[i]!.map((m) => m.rss)),
      rssLoadedMiB: median(r.memLoaded[i]!.map((m) => m.rss)),
      peakMiB: r.memLoaded[i]!.length ? Math.max(...r.memLoaded[i]!.map((m) => m.hwm)) : null,
    })),
    errors: r.errors,
  };
}

function scaleSummary(s: ScaleStats) {
  const col = (f: (r: ScaleRun) => number) => median(s.runs.map(f));
  return {
    name: s.pair.name,
    status: s.status,
    why: s.why ?? null,
    idlePeers: IDLE_PEERS,
    tcpMbps: { without: col((r) => r.tcpWithoutMbps), with: col((r) => r.tcpWithMbps) },
    pingMedianMs: { without: col((r) => r.pingWithout.medianMs!), with: col((r) => r.pingWith.medianMs!) },
    addconfSeconds: [0, 1].map((i) => col((r) => r.addconfSeconds[i]!)),
    dumpSeconds: [0, 1].map((i) => col((r) => r.dumpSeconds[i]!)),
    peersListed: s.runs.map((r) => r.peersListed),
    runs: s.runs,
    errors: s.errors,
  };
}

type Row = ReturnType<typeof summary>;

/** "median / avg" of a ping summary. */
function rtt(p: Row["ping"]["cold"]): string {
  if (p.medianMs == null) return "–";
  return `${f2(p.medianMs)} / ${f2(p.avgMs)}` + (p.lossPercent ? ` (${f0(p.lossPercent)}% lost)` : "");
}

function rss(s: Row, i: number): string {
  const d = s.daemons[i];
  return d ? `${f0(d.rssIdleMiB)}→${f0(d.rssLoadedMiB)}` : "–";
}

/** Throughput and what it costs. */
function throughputTable(rows: Row[], opts: Options): string {
  const head = [
    "pair (A→B)",
    "TCP Mbit/s",
    `UDP Mbit/s @${opts.udpRate}`,
    "UDP loss %",
    "CPU s/GB (A+B)",
    "RSS A MiB idle→load",
    "RSS B MiB idle→load",
  ];
  const body = rows.map((s) => {
    if (s.status !== "ok") return [s.name, `${s.status}: ${s.why}`, "", "", "", "", ""];
    const t = s.tcpMbps;
    return [
      s.name,
      t.median == null ? "–" : `${f0(t.median)} (${f0(t.min)}–${f0(t.max)})`,
      f0(s.udp.receivedMbps),
      f1(s.udp.lossPercent),
      f2(s.cpuSecondsPerGB.median),
      rss(s, 0),
      rss(s, 1),
    ];
  });
  return markdownTable(head, body);
}

/** Latency: the three pings, and how soon a fresh pair answers. */
function latencyTable(rows: Row[]): string {
  const head = [
    "pair (A→B)",
    "ping cold ms med / avg",
    "ping idle ms med / avg",
    "ping under load ms med / avg",
    "start→UAPI ms A / B",
    "config→handshake ms",
  ];
  const body = rows.filter((s) => s.status === "ok").map((s) => [
    s.name,
    rtt(s.ping.cold),
    rtt(s.ping.idle),
    rtt(s.ping.loaded),
    s.daemons.length ? s.daemons.map((d) => f0(d.startToUapiMs.median)).join(" / ") : "–",
    f0(s.configToHandshakeMs.median),
  ]);
  return markdownTable(head, body);
}

function scaleTable(rows: ReturnType<typeof scaleSummary>[]): string {
  const head = [
    "pair (A→B)",
    `TCP Mbit/s without → with ${IDLE_PEERS} peers`,
    "ping ms without → with",
    "wg addconf s A / B",
    "wg show dump s A / B",
  ];
  const body = rows.map((s) => {
    if (s.status !== "ok") return [s.name, `${s.status}: ${s.why}`, "", "", ""];
    return [
      s.name,
      `${f0(s.tcpMbps.without)} → ${f0(s.tcpMbps.with)}`,
      `${f2(s.pingMedianMs.without)} → ${f2(s.pingMedianMs.with)}`,
      s.addconfSeconds.map(f2).join(" / "),
      s.dumpSeconds.map(f2).join(" / "),
    ];
  });
  return markdownTable(head, body);
}

/** What the pair tables of a RESULTS.md section measured, and how. */
function pairsText(opts: Options): string {
  return `${opts.rounds} interleaved rounds, each on freshly started daemons; medians over rounds (TCP: ` +
    `min–max in brackets). A sends, B receives. TCP and UDP ${opts.time} s each (iperf3; TCP -O ` +
    `${
      omitted(opts.time)
    }, UDP -b ${opts.udpRate} -l ${UDP_LEN}). Ping RTT as median / mean of a run: cold = ` +
    `the first 40 pings 0.05 s apart right after the first handshake, idle = the 8 pings 0.5 s apart right ` +
    `after those, under load = pings 0.05 s apart during the TCP transfer. start→UAPI: spawning a daemon ` +
    `until its UAPI answers a get; config→handshake: \`wg set\` and \`ip link set up\` done until the ` +
    `initiator reports a handshake. CPU s/GB: user+sys of both daemons over the TCP transfer per GB received. ` +
    `RSS from /proc/PID/status, idle after the pings and after the load.`;
}

function scaleText(opts: Options): string {
  return `Idle peers (as tests/netns/scale_test.ts), ${opts.rounds} interleaved rounds on fresh pairs, medians: ` +
    `after a 1 s warm-up transfer, TCP ${opts.time} s (-O ${
      omitted(opts.time)
    }) and 20 pings 0.05 s apart, ` +
    `then \`wg addconf\` of ${IDLE_PEERS} peers (random keys, one /32 each) on both sides and \`wg show ` +
    `IF dump\`, then TCP and pings again.`;
}

function markdownTable(head: string[], body: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(w[i]!)).join(" | ")} |`;
  return [line(head), line(w.map((n) => "-".repeat(n))), ...body.map(line)].join("\n");
}

function startupTable(rows: Startup[]): string {
  return markdownTable(
    ["command", "genkey ms (median of 7)", "daemon start → UAPI answers ms (median of 5)"],
    rows.map((s) => [s.command, s.error ? `failed: ${s.error}` : f0(s.genkeyMs), f0(s.daemonReadyMs)]),
  );
}

// ---------------------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : e}\n\n${USAGE}`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!isRoot) {
    process.stderr.write("bench: needs root (it creates network namespaces and TUN interfaces)\n");
    return 1;
  }
  for (const t of ["ip", "ping"]) {
    if (!have(t)) {
      process.stderr.write(`bench: needs ${t} (apt-get install iproute2 iputils-ping)\n`);
      return 1;
    }
  }
  let selected: Selection;
  try {
    selected = selectPairs(allPairs(opts.crypto, opts.baseline !== null), opts.only, opts.scale);
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : e}\n`);
    return 2;
  }
  const iperf = have("iperf3");
  // Seconds per pair and round: set-up and tear-down, cold and idle pings, then TCP and UDP.
  const perRound = 5 + 2 + 3.5 + (iperf ? 2 * opts.time + omitted(opts.time) + 3 : 0);
  const perScale = 13 + 2 * (opts.time + omitted(opts.time));
  const estimate = opts.rounds * (selected.pairs.length * perRound + selected.scale.length * perScale) +
    (selected.startup ? 30 : 0);
  // A watchdog: the run is bounded even if some step hangs past its own timeout.
  const limitS = Math.ceil(estimate * 3 + 120);
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: stopped after ${limitS} s (more than three times the estimate)\n`);
    cleanupAll();
    process.exit(1);
  }, limitS * 1000);
  const host = hostInfo(opts);
  console.log(
    `bench: ${selected.pairs.length} pairs × ${opts.rounds} rounds × (fresh pair, 40 + 8 pings, TCP ${opts.time} ` +
      `s, UDP ${opts.time} s)` +
      (selected.scale.length ? ` + ${selected.scale.length} pairs × ${IDLE_PEERS} idle peers` : "") +
      `; about ${Math.ceil(estimate / 60)} min. typetun = ${host.typetunCommand}`,
  );

  const startup = selected.startup ? await measureStartup(opts) : [];
  if (startup.length) console.log(`\nStartup\n${startupTable(startup)}\n`);

  const runs = selected.pairs.map(newPairRun);
  for (const r of runs) {
    const missing = needs(r.pair, opts);
    if (missing) {
      Object.assign(r, { status: "skipped", why: missing });
      console.log(`${r.pair.name}: skipped: ${missing}`);
    }
  }
  if (!iperf) { for (const r of runs) r.errors.push("TCP/UDP skipped: iperf3 not installed"); }
  const scales: ScaleStats[] = selected.scale.filter((p) => !needs(p, opts) && iperf).map((pair) => ({
    pair,
    status: "ok",
    runs: [],
    errors: [],
  }));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const r of runs.filter((r) => r.status === "ok")) {
      try {
        await measureRound(r, round, opts, iperf);
      } catch (e) {
        // The pair could not be set up: no figure of this round would mean anything, nor of later ones.
        Object.assign(r, { status: "failed", why: e instanceof Error ? e.message : String(e) });
        console.log(`round ${round}/${opts.rounds} ${r.pair.name}: failed: ${r.why}`);
        continue;
      }
      console.log(
        `round ${round}/${opts.rounds} ${r.pair.name}: handshake ${f0(r.handshake.at(-1))} ms after ` +
          `configuration; ping cold ${f2(r.cold.at(-1)?.medianMs)}, idle ${f2(r.idle.at(-1)?.medianMs)}, ` +
          `under load ${f2(r.loaded.at(-1)?.medianMs)} ms; TCP ${f0(r.tcp.at(-1))} Mbit/s` +
          (r.cpu.length ? ` (${f2(r.cpu.at(-1)?.secondsPerGB)} CPU s/GB)` : "") +
          `; UDP ${f0(r.udp.at(-1)?.mbps)} Mbit/s ${f1(r.udp.at(-1)?.loss)}% loss`,
      );
    }
    for (const s of scales.filter((s) => s.status === "ok")) {
      try {
        const x = await measureScale(s.pair, opts);
        s.runs.push(x);
        console.log(
          `round ${round}/${opts.rounds} ${s.pair.name} with ${IDLE_PEERS} idle peers: TCP ` +
            `${f0(x.tcpWithoutMbps)} → ${f0(x.tcpWithMbps)} Mbit/s, ping ${f2(x.pingWithout.medianMs)} → ` +
            `${f2(x.pingWith.medianMs)} ms, addconf ${x.addconfSeconds.map(f2).join("/")} s, dump ` +
            `${x.dumpSeconds.map(f2).join("/")} s`,
        );
        if (x.peersListed !== 1 + IDLE_PEERS) {
          s.errors.push(`round ${round}: wg show dump listed ${x.peersListed} peers, not ${1 + IDLE_PEERS}`);
        }
      } catch (e) {
        s.errors.push(`round ${round}: ${e instanceof Error ? e.message : e}`);
        console.log(
          `round ${round}/${opts.rounds} ${s.pair.name} with idle peers: failed: ${s.errors.at(-1)}`,
        );
      }
    }
  }
  for (const s of scales) {
    if (s.runs.length === 0) Object.assign(s, { status: "failed", why: s.errors[0] ?? "no run" });
  }

  const rows = runs.map(summary);
  const scaleRows = scales.map(scaleSummary);
  const date = new Date().toISOString();
  const aeads = [
    ...new Set(
      rows.flatMap((s) =>
        s.daemons.filter((d) => d.impl.startsWith("typetun")).map((d) => `${d.impl}: ${d.aead}`)
      ),
    ),
  ];
  const notes = [
    ...rows.flatMap((s) => s.errors.map((e) => `${s.name}: ${e}`)),
    ...scaleRows.flatMap((s) => s.errors.map((e) => `${s.name} (idle peers): ${e}`)),
    ...aeads.map((a) => `AEAD ${a}`),
  ];
  const tables = [
    ...(rows.length ? [throughputTable(rows, opts), latencyTable(rows)] : []),
    ...(scaleRows.length ? [scaleTable(scaleRows)] : []),
  ];
  console.log(`\n${tables.join("\n\n")}\n`);
  for (const n of notes) console.log(`- ${n}`);

  if (opts.write) {
    const json = {
      date,
      host,
      options: {
        rounds: opts.rounds,
        time: opts.time,
        udpRate: opts.udpRate,
        udpLength: UDP_LEN,
        pings: {
          cold: { count: 40, interval: 0.05 },
          idle: { count: 8, interval: 0.5 },
          loaded: { interval: 0.05 },
        },
        env: opts.env,
      },
      topology: { veth: VETH, tunnel: INNER, tunnelMtu: TUNNEL_MTU },
      startup,
      pairs: rows,
      scale: scaleRows,
    };
    writeFileSync(resolve(ROOT, "bench/results.json"), JSON.stringify(json, null, 2) + "\n");
    const mdPath = resolve(ROOT, "bench/RESULTS.md");
    const title = "# Benchmark results\n";
    const old = existsSync(mdPath) ? readFileSync(mdPath, "utf8").replace(title, "").trimStart() : "";
    const section = [
      `## ${date.slice(0, 16).replace("T", " ")} UTC`,
      "",
      `${host.cpu}, ${host.cores} cores, Linux ${host.kernel}, load ${host.loadAverage} at the end; deno ` +
      `${host.deno}, bun ${host.bun}, ${host.wireguardGo?.replace(/ *$/, "")}, ${host.iperf3}; typetun ` +
      `checkout ${host.typetunCommit} run as \`${host.typetunCommand}\`` +
      (host.typetunBuilt ? ` (built ${host.typetunBuilt})` : "") +
      (opts.baseline ? `; typetun(baseline) is \`${opts.baseline[0]}\` (built ${host.baselineBuilt}).` : "."),
      "",
      ...(rows.length ? [pairsText(opts), ""] : []),
      ...(startup.length ? [startupTable(startup), ""] : []),
      ...tables.flatMap((t) => [t, ""]),
      ...(scaleRows.length ? [scaleText(opts), ""] : []),
      ...notes.map((n) => `- ${n}`),
      "",
    ].join("\n");
    writeFileSync(mdPath, `${title}\n${section}\n${old}`.trimEnd() + "\n");
    // In the project's own format, so `deno fmt --check` (part of npm test) accepts the file as written.
    if (process.versions.deno) {
      const fmt = spawnSync(process.execPath, ["fmt", "--quiet", mdPath], { cwd: ROOT, encoding: "utf8" });
      if (fmt.status !== 0) console.log(`warning: deno fmt ${mdPath}: ${firstLine(fmt.stderr)}`);
    }
    console.log(`\nwrote bench/results.json and bench/RESULTS.md`);
  }
  clearTimeout(watchdog);
  return 0;
}

if (import.meta.main) {
  const interrupted = (sig: string) => () => {
    process.stderr.write(`\nbench: ${sig}: cleaning up\n`);
    cleanupAll();
    process.exit(130);
  };
  process.on("SIGINT", interrupted("SIGINT"));
  process.on("SIGTERM", interrupted("SIGTERM"));
  let code = 1;
  try {
    code = await main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.stack : e}\n`);
  } finally {
    cleanupAll();
  }
  process.exit(code);
}
