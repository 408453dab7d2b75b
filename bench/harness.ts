/**
 * The benchmark harness (`deno task bench`, `npm run bench`): one run measures, on the same topology, plain
 * veth (the ceiling), wireguard-go on both sides, typetun on both sides, and the mixed pairs. For each pair:
 * TCP and UDP throughput (iperf3), ping RTT, the time from starting the daemons to the first completed
 * handshake, and each daemon's resident memory idle and after the load. Before that, how fast typetun starts:
 * `genkey` wall time and the time until a daemon's UAPI socket answers.
 *
 * Topology per pair: namespaces A and B joined by a veth pair (192.168.250.1/.2), a WireGuard interface in
 * each (10.250.0.1/.2, MTU 1420) configured with `wg set` through the UAPI; A sends, B receives. Every pair
 * has its own namespaces and stays up for the whole run, so the measurements can be interleaved: each round
 * goes over all pairs, and a pair's figure is the median over rounds (the machine's noise hits all alike).
 *
 * Prints a table, writes bench/results.json (this run only, machine-readable) and puts a dated section at
 * the top of bench/RESULTS.md (the history stays below). Root is needed; traffic stays in the namespaces.
 * Everything the harness starts is killed by PID and its namespaces deleted on exit, on error and on Ctrl-C.
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
iperf3, wg, ping; wireguard-go for its rows).

Options:
  --rounds N        interleaved rounds over all pairs (default 3)
  --time S          seconds per iperf3 run (default 5)
  --udp-rate RATE   iperf3 -u target rate (default 1G)
  --ping-interval S seconds between the 20 pings (default 0.05; 1 shows the RTT of a tunnel idle between pings)
  --only LIST       comma-separated rows or groups: startup, veth, wireguard-go, typetun, mixed,
                    typetun→wireguard-go, wireguard-go→typetun (ASCII -> works too), typetun(native)…
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

class UsageError extends Error {}

interface Options {
  rounds: number;
  time: number;
  udpRate: string;
  pingInterval: number;
  only: string[] | null;
  typetun: string[];
  crypto: (string | null)[];
  /** A second typetun command for before/after rows, or null. */
  baseline: string[] | null;
  /** The wireguard-go to run. */
  wireguardGo: string;
  env: Record<string, string>;
  write: boolean;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "3" },
      time: { type: "string", default: "5" },
      "udp-rate": { type: "string", default: "1G" },
      "ping-interval": { type: "string", default: "0.05" },
      only: { type: "string" },
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
    pingInterval: pingInterval(values["ping-interval"]),
    only: list(values.only)?.map((s) => s.replaceAll("->", "→")) ?? null,
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
type Impl = { kind: "typetun"; crypto: string | null; baseline?: boolean } | { kind: "wireguard-go" };

interface Pair {
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

function allPairs(crypto: (string | null)[], baseline: boolean): Pair[] {
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

function selectPairs(pairs: Pair[], only: string[] | null): { pairs: Pair[]; startup: boolean } {
  if (only === null) return { pairs, startup: true };
  const known = new Set(["startup", ...pairs.flatMap((p) => [p.name, ...p.groups])]);
  // "typetun→wireguard-go" names the mixed rows of every crypto variant when --crypto is given.
  const generic = (n: string) => n.replace(/typetun\([^)]*\)/g, "typetun");
  for (const o of only) {
    if (!known.has(o) && !pairs.some((p) => generic(p.name) === o)) {
      throw new UsageError(`--only: unknown row "${o}"; rows and groups: ${[...known].join(", ")}`);
    }
  }
  return {
    pairs: pairs.filter((p) =>
      only.some((o) => o === p.name || p.groups.includes(o) || generic(p.name) === o)
    ),
    startup: only.includes("startup"),
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

function median(xs: number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

interface Side {
  impl: Impl;
  ifname: string;
  child: ChildProcess;
  log: () => string;
  readyMs: number;
  memIdle?: { rss: number; hwm: number } | null;
  memLoaded?: { rss: number; hwm: number } | null;
  aead?: string;
}

interface PairRun {
  pair: Pair;
  status: "ok" | "skipped" | "failed";
  why?: string;
  lab?: Lab;
  ns?: [string, string];
  sides: Side[];
  target: string;
  handshakeMs?: number;
  tcp: number[];
  udp: { mbps: number; loss: number }[];
  ping: { avg: number; mdev: number; loss: number }[];
  errors: string[];
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

/** Namespaces, veth, both daemons, `wg set`; the time until the first handshake completes. */
async function setUp(r: PairRun, opts: Options): Promise<void> {
  const lab = new Lab();
  labs.add(lab);
  r.lab = lab;
  const t = tag();
  const nsA = lab.ns(`tbA${t}`), nsB = lab.ns(`tbB${t}`);
  r.ns = [nsA, nsB];
  lab.veth(nsA, nsB, [VETH[0], "fd00:250::1"], [VETH[1], "fd00:250::2"]);
  const { a, b } = r.pair;
  if (a === null || b === null) {
    r.target = VETH[1];
    return;
  }
  r.target = INNER[1];
  const [kA, kB] = await Promise.all([keyPair(), keyPair()]);
  // The clock starts with both daemons and includes their configuration: what a user waits for.
  const t0 = performance.now();
  r.sides = await Promise.all([startDaemon(lab, nsA, a, opts), startDaemon(lab, nsB, b, opts)]);
  const [A, B] = r.sides as [Side, Side];
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
    wgSet(B.ifname, kB.priv, ["listen-port", `${PORTS[1]}`, "peer", kA.pub, "allowed-ips", `${INNER[0]}/32`]),
  ]);
  for (const [ns, side, addr] of [[nsA, A, INNER[0]], [nsB, B, INNER[1]]] as const) {
    await run("ip", ["-n", ns, "addr", "add", `${addr}/24`, "dev", side.ifname]);
    await run("ip", ["-n", ns, "link", "set", side.ifname, "mtu", `${TUNNEL_MTU}`, "up"]);
  }
  // A packet for the peer starts the handshake; the UAPI says when it completed.
  const pinger = spawn("ip", ["netns", "exec", nsA, "ping", "-c", "200", "-i", "0.05", "-W", "1", INNER[1]], {
    stdio: "ignore",
  });
  lab.children.push(pinger);
  try {
    for (;;) {
      const info = await uapiGet(A.ifname);
      if (Number(info?.get("last_handshake_time_sec") ?? 0) > 0) break;
      if (performance.now() - t0 > 10_000) throw new Error("no handshake within 10 s");
      await sleep(2);
    }
    r.handshakeMs = performance.now() - t0;
  } finally {
    pinger.kill("SIGKILL");
  }
  // The backend in use as the daemon reports it (a log line naming the AEAD), not as requested.
  for (const s of r.sides) {
    if (s.impl.kind !== "typetun") {
      s.aead = "Go (golang.org/x/crypto)";
      continue;
    }
    const line = /^.*\b(AEAD|crypto)\b.*$/im.exec(s.log())?.[0];
    const requested = s.impl.crypto ? ` (TYPETUN_CRYPTO=${s.impl.crypto} was set)` : "";
    s.aead = line ? line.replace(/^\w+: \([^)]*\) [\d-]+ [\d:]+ /, "") : `not logged${requested}`;
  }
}

async function iperfServer(r: PairRun): Promise<void> {
  const [, nsB] = r.ns!;
  const child = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", `${IPERF_PORT}`], {
    stdio: "ignore",
  });
  r.lab!.children.push(child);
  for (let i = 0; i < 100; i++) {
    const ss = await run("ip", ["netns", "exec", nsB, "ss", "-Hltn", `sport = :${IPERF_PORT}`]);
    if (ss.trim()) return;
    if (child.exitCode !== null) break;
    await sleep(20);
  }
  throw new Error("iperf3 server did not start");
}

async function tcp(r: PairRun, opts: Options): Promise<number> {
  const out = await inNs(r.ns![0], "iperf3", [
    "-c",
    r.target,
    "-p",
    `${IPERF_PORT}`,
    "-t",
    `${opts.time}`,
    "-J",
  ], (opts.time + 30) * 1000);
  return JSON.parse(out).end.sum_received.bits_per_second / 1e6;
}

async function udp(r: PairRun, opts: Options): Promise<{ mbps: number; loss: number }> {
  const out = await inNs(r.ns![0], "iperf3", [
    "-c",
    r.target,
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

function pingInterval(v: string): number {
  const n = Number(v);
  // ping refuses intervals below 0.002 s even for root.
  if (!/^\d+(\.\d+)?$/.test(v) || n < 0.002 || n > 5) {
    throw new UsageError(`--ping-interval must be seconds from 0.002 to 5, not "${v}"`);
  }
  return n;
}

async function ping(r: PairRun, interval: number): Promise<{ avg: number; mdev: number; loss: number }> {
  const args = ["-c", "20", "-i", `${interval}`, "-W", "1", "-q", r.target];
  const out = await inNs(r.ns![0], "ping", args, 20_000 + 20_000 * interval);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(out);
  const loss = Number(/([\d.]+)% packet loss/.exec(out)?.[1] ?? NaN);
  if (!rtt) throw new Error(`ping: no RTT in its output (${loss}% loss)`);
  return { avg: Number(rtt[2]), mdev: Number(rtt[4]), loss };
}

/** Runs `f`, recording a failure in the pair's errors instead of ending the run. */
async function attempt<T>(r: PairRun, what: string, f: () => Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    r.errors.push(`${what}: ${e instanceof Error ? e.message : e}`);
    return undefined;
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
    loadAverage: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
  };
}

const f0 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(0));
const f1 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(1));
const f2 = (x: number | null | undefined) => (x == null ? "–" : x.toFixed(2));

function summary(r: PairRun) {
  const tcpSorted = [...r.tcp].sort((p, q) => p - q);
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
    ping: {
      avgMs: median(r.ping.map((p) => p.avg)),
      mdevMs: median(r.ping.map((p) => p.mdev)),
      lossPercent: median(r.ping.map((p) => p.loss)),
      runs: r.ping,
    },
    handshakeMs: r.handshakeMs ?? null,
    daemons: r.sides.map((s, i) => ({
      side: i === 0 ? "A (sender)" : "B (receiver)",
      impl: implName(s.impl),
      readyMs: s.readyMs,
      aead: s.aead ?? null,
      idle: s.memIdle ?? null,
      afterLoad: s.memLoaded ?? null,
    })),
    errors: r.errors,
  };
}

function mem(s: ReturnType<typeof summary>, i: number): string {
  const d = s.daemons[i];
  if (!d) return "–";
  return `${f0(d.idle?.rss)}→${f0(d.afterLoad?.rss)}`;
}

function table(rows: ReturnType<typeof summary>[], opts: Options): string {
  const head = [
    "pair (A→B)",
    "TCP Mbit/s",
    `UDP Mbit/s @${opts.udpRate}`,
    "UDP loss %",
    "ping ms avg ± mdev",
    "start→handshake ms",
    "RSS A MiB idle→load",
    "RSS B MiB idle→load",
  ];
  const body = rows.map((s) => {
    if (s.status !== "ok") return [s.name, `${s.status}: ${s.why}`, "", "", "", "", "", ""];
    const t = s.tcpMbps;
    return [
      s.name,
      t.median == null ? "–" : `${f0(t.median)} (${f0(t.min)}–${f0(t.max)})`,
      f0(s.udp.receivedMbps),
      f1(s.udp.lossPercent),
      s.ping.avgMs == null ? "–" : `${f2(s.ping.avgMs)} ± ${f2(s.ping.mdevMs)}`,
      f0(s.handshakeMs),
      mem(s, 0),
      mem(s, 1),
    ];
  });
  return markdownTable(head, body);
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
  let selected: { pairs: Pair[]; startup: boolean };
  try {
    selected = selectPairs(allPairs(opts.crypto, opts.baseline !== null), opts.only);
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : e}\n`);
    return 2;
  }
  const iperf = have("iperf3");
  const pingS = 20 * opts.pingInterval;
  const perRound = iperf ? 2 * opts.time + 3 + pingS : 1 + pingS;
  const estimate = selected.pairs.length * (opts.rounds * perRound + 3) + (selected.startup ? 20 : 0);
  // A watchdog: the run is bounded even if some step hangs past its own timeout.
  const limitS = estimate * 3 + 120;
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: stopped after ${limitS} s (more than three times the estimate)\n`);
    cleanupAll();
    process.exit(1);
  }, limitS * 1000);
  const host = hostInfo(opts);
  console.log(
    `bench: ${selected.pairs.length} pairs × ${opts.rounds} rounds × (TCP ${opts.time} s, UDP ${opts.time} s, ` +
      `ping ${pingS} s); about ${Math.ceil(estimate / 60)} min. typetun = ${host.typetunCommand}`,
  );

  const startup = selected.startup ? await measureStartup(opts) : [];
  if (startup.length) console.log(`\nStartup\n${startupTable(startup)}\n`);

  const runs: PairRun[] = selected.pairs.map((pair) => ({
    pair,
    status: "ok",
    sides: [],
    target: "",
    tcp: [],
    udp: [],
    ping: [],
    errors: [],
  }));
  for (const r of runs) {
    const missing = needs(r.pair, opts);
    if (missing) {
      Object.assign(r, { status: "skipped", why: missing });
      console.log(`${r.pair.name}: skipped: ${missing}`);
      continue;
    }
    try {
      await setUp(r, opts);
      if (iperf) await iperfServer(r);
      await sleep(500); // let the daemons settle after the handshake before the idle reading
      for (const s of r.sides) s.memIdle = memory(s.child.pid!);
      console.log(
        `${r.pair.name}: up` +
          (r.handshakeMs !== undefined ? `, first handshake ${f0(r.handshakeMs)} ms` : ""),
      );
    } catch (e) {
      Object.assign(r, { status: "failed", why: e instanceof Error ? e.message : String(e) });
      console.log(`${r.pair.name}: failed: ${r.why}`);
      const logs = r.sides.map((s) => s.log()).filter(Boolean).join("\n").trim();
      if (logs) console.log(logs.split("\n").slice(-5).map((l) => `  ${l}`).join("\n"));
    }
  }
  const live = runs.filter((r) => r.status === "ok");
  for (let round = 1; round <= opts.rounds; round++) {
    for (const r of live) {
      if (iperf) {
        const t = await attempt(r, `round ${round} TCP`, () => tcp(r, opts));
        if (t !== undefined) r.tcp.push(t);
        const u = await attempt(r, `round ${round} UDP`, () => udp(r, opts));
        if (u !== undefined) r.udp.push(u);
      }
      const p = await attempt(r, `round ${round} ping`, () => ping(r, opts.pingInterval));
      if (p !== undefined) r.ping.push(p);
      console.log(
        `round ${round}/${opts.rounds} ${r.pair.name}: TCP ${f0(r.tcp.at(-1))} Mbit/s, UDP ` +
          `${f0(r.udp.at(-1)?.mbps)} Mbit/s ${f1(r.udp.at(-1)?.loss)}% loss, ping ${
            f2(r.ping.at(-1)?.avg)
          } ms`,
      );
    }
  }
  for (const r of live) for (const s of r.sides) s.memLoaded = memory(s.child.pid!);
  if (!iperf) {
    for (const r of live) r.errors.push("TCP/UDP skipped: iperf3 not installed");
  }

  const rows = runs.map(summary);
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
    ...aeads.map((a) => `AEAD ${a}`),
  ];
  const tbl = table(rows, opts);
  console.log(`\n${tbl}\n`);
  for (const n of notes) console.log(`- ${n}`);

  if (opts.write) {
    const json = {
      date,
      host,
      options: {
        rounds: opts.rounds,
        time: opts.time,
        udpRate: opts.udpRate,
        pingInterval: opts.pingInterval,
        udpLength: UDP_LEN,
        env: opts.env,
      },
      topology: { veth: VETH, tunnel: INNER, tunnelMtu: TUNNEL_MTU },
      startup,
      pairs: rows,
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
      `${host.typetunCommit} run as \`${host.typetunCommand}\`.`,
      "",
      `${opts.rounds} interleaved rounds; TCP and UDP ${opts.time} s each (iperf3, UDP -b ${opts.udpRate} ` +
      `-l ${UDP_LEN}), ping 20 × ${opts.pingInterval} s; medians over rounds (TCP: min–max in brackets). A sends, B ` +
      `receives. RSS from /proc/PID/status, idle after the handshake and after the load.`,
      "",
      ...(startup.length ? [startupTable(startup), ""] : []),
      tbl,
      "",
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
