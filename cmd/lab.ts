/**
 * `typetun lab`: a whole WireGuard topology from one file (issue 15). `lab up` turns a {@link Lab} into
 * namespaces (`<lab>-<node>`), veth pairs, addresses, routes, forwarding, NAT and one WireGuard daemon per
 * interface, with keys generated here and peers configured over the UAPI; `lab down` removes all of it, by the
 * state that `up` writes before each step (cmd/lab_state.ts).
 *
 * UAPI sockets live in /var/run/wireguard, which namespaces of the network alone do not separate: two nodes
 * each with a `wg0` would fight over `wg0.sock`. Each daemon therefore runs in its own mount namespace (the one
 * `ip netns exec` makes anyway) with the node's directory under the lab's state bind-mounted over
 * /var/run/wireguard; this process reaches the socket through that directory, and `lab exec` mounts it the same
 * way, so `wg show` inside a node sees that node's interfaces.
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import process from "node:process";
import { clampPrivateKey, dhPublic } from "../lib/crypto.ts";
import { keyFromBase64, keyToBase64 } from "../lib/encoding.ts";
import { Endpoint, formatCidr, parseAddress, parseCidr } from "../lib/ip.ts";
import { formatInterfaceAddress, type InterfaceAddress } from "../lib/config.ts";
import type { Lab } from "../lib/lab.ts";
import { LabError } from "../lib/lab.ts";
import { parseLab } from "../lib/lab_parse.ts";
import type { DeviceInfo, DeviceUpdate } from "../lib/uapi.ts";
import { uapiGet, uapiSet } from "./uapi_client.ts";
import { systemRng } from "./keys.ts";
import { selfCommand } from "./daemon.ts";
import {
  labDir,
  type LabState,
  readState,
  runningLabs,
  type StatePeer,
  type StateWireguard,
  writeState,
} from "./lab_state.ts";

const USAGE = `Usage: typetun lab up FILE
       typetun lab down NAME|FILE
       typetun lab exec NAME NODE -- CMD...
       typetun lab shell NAME NODE
       typetun lab show [NAME] [--json] [--dot]
       typetun lab check NAME|FILE
       typetun lab list
`;

/** How long a daemon may take to open its UAPI socket (a cold `deno run` on a loaded machine needs seconds). */
const DAEMON_START_MS = 20_000;

class StepError extends Error {}

/** Runs a command (argv, no shell) and throws with its stderr when it fails. */
function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", input, timeout: 30_000 });
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || `status ${r.status}`).trim();
    throw new StepError(`${argv.join(" ")}: ${why}`);
  }
  return r.stdout;
}

function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

const nsOf = (lab: string, node: string) => `${lab}-${node}`;
const sockDirOf = (lab: string, node: string) => `${labDir(lab)}/sock/${node}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function newKeyPair(): { priv: string; pub: string } {
  const k = new Uint8Array(32);
  systemRng(k);
  const priv = clampPrivateKey(k);
  return { priv: keyToBase64(priv), pub: keyToBase64(dhPublic(priv)) };
}

function newPsk(): string {
  const k = new Uint8Array(32);
  systemRng(k);
  return keyToBase64(k);
}

/** The first address of `node:ifname`, from the links or the WireGuard interfaces; null if it has none. */
function firstAddress(lab: Lab, node: string, ifname: string): InterfaceAddress | null {
  for (const l of lab.links) {
    for (let i = 0; i < 2; i++) {
      const e = l.ends[i]!;
      if (e.node === node && e.ifname === ifname) return l.addresses[i]![0] ?? null;
    }
  }
  const wg = lab.wireguards.find((w) => w.node === node && w.name === ifname);
  return wg?.addresses[0] ?? null;
}

const addrText = (a: InterfaceAddress) => formatInterfaceAddress(a).replace(/\/[0-9]+$/, "");

// ---- UAPI through a socket path ----

async function labGet(w: StateWireguard): Promise<DeviceInfo> {
  try {
    return await uapiGet(w.name, `${w.socketDir}/${w.name}.sock`);
  } catch (e) {
    throw new StepError(`${w.node}:${w.name}: get: ${(e as Error).message}`);
  }
}

async function labSet(w: StateWireguard, update: DeviceUpdate): Promise<void> {
  try {
    await uapiSet(w.name, update, `${w.socketDir}/${w.name}.sock`);
  } catch (e) {
    throw new StepError(`${w.node}:${w.name}: set: ${(e as Error).message}`);
  }
}

// ---- loading ----

/** A lab file through the parser (lib/lab_parse.ts); a LabError lists every problem. */
export function loadLab(file: string): Lab {
  const text = readFileSync(file, "utf8");
  return parseLab(text, file);
}

/** NAME, or FILE whose `name` it is. */
function labName(arg: string): string {
  if (/\.toml$/.test(arg) && existsSync(arg)) return loadLab(arg).name;
  return arg;
}

// ---- up ----

export interface UpOptions {
  /** The command that runs a typetun daemon (default: this program, selfCommand()). */
  typetun?: string[];
  /** Progress lines (default: stderr). */
  say?: (line: string) => void;
}

/** The plain view of the lab kept in the state, before anything exists. */
function planState(lab: Lab, file: string): LabState {
  const keys = new Map(lab.wireguards.map((w) => [`${w.node}:${w.name}`, newKeyPair()]));
  const psks = new Map<string, string>();
  const pairKey = (a: string, b: string) => (a < b ? `${a} ${b}` : `${b} ${a}`);
  for (const w of lab.wireguards) {
    for (const p of w.peers) {
      const k = pairKey(`${w.node}:${w.name}`, `${p.to.node}:${p.to.name}`);
      if (p.presharedKey && !psks.has(k)) psks.set(k, newPsk());
    }
  }
  const wireguards: StateWireguard[] = lab.wireguards.map((w) => {
    const self = `${w.node}:${w.name}`;
    const impl = w.implementation;
    return {
      node: w.node,
      name: w.name,
      addresses: w.addresses.map(formatInterfaceAddress),
      implementation: impl.kind === "path" ? impl.path : impl.kind,
      listenPort: w.listenPort ?? 0,
      mtu: w.mtu,
      privateKey: keys.get(self)!.priv,
      publicKey: keys.get(self)!.pub,
      socketDir: sockDirOf(lab.name, w.node),
      pid: null,
      peers: w.peers.map((p): StatePeer => {
        const to = `${p.to.node}:${p.to.name}`;
        const ep = p.endpoint ? firstAddress(lab, p.endpoint.node, p.endpoint.ifname) : null;
        return {
          to,
          publicKey: keys.get(to)!.pub,
          presharedKey: psks.get(pairKey(self, to)) ?? null,
          // The port is filled in once the peer's daemon has bound one.
          endpoint: ep ? addrText(ep) : null,
          allowedIps: p.allowedIps.map(formatCidr),
          persistentKeepalive: p.persistentKeepalive,
        };
      }),
    };
  });
  const checks = lab.checks.map((c) => {
    const m = /^([^:]+):([^:]+)$/.exec(c.ping);
    const a = m ? firstAddress(lab, m[1]!, m[2]!) : null;
    const target = m ? (a ? addrText(a) : null) : c.ping;
    return { line: c.line, from: c.from, ping: c.ping, target, expect: c.expect };
  });
  return {
    name: lab.name,
    file,
    namespaces: [],
    nodes: lab.nodes.map((n) => n.name),
    links: lab.links.map((l) => ({
      ends: [0, 1].map((i) => ({
        node: l.ends[i]!.node,
        ifname: l.ends[i]!.ifname,
        addresses: l.addresses[i]!.map(formatInterfaceAddress),
      })) as LabState["links"][number]["ends"],
      mtu: l.mtu,
    })),
    wireguards,
    checks,
    complete: false,
  };
}

/**
 * `ip netns exec NS` argv that runs `argv` with `sockDir` bind-mounted over /var/run/wireguard. `ip netns exec`
 * has made a mount namespace of the command's own, so the mount stays there; the shell execs the command, so
 * its PID is the one spawn() returns. `then` is "&&" (the mount must work) or ";" (best effort).
 */
function inNode(ns: string, sockDir: string, argv: string[], then: "&&" | ";"): string[] {
  const mount = then === "&&"
    ? 'mount --bind "$0" /var/run/wireguard'
    : '[ -d "$0" ] && mount --bind "$0" /var/run/wireguard 2>/dev/null';
  return ["netns", "exec", ns, "sh", "-c", `${mount} ${then} exec "$@"`, sockDir, ...argv];
}

function startDaemon(state: LabState, w: StateWireguard, typetun: string[]): ChildProcess {
  const ns = nsOf(state.name, w.node);
  mkdirSync(w.socketDir, { recursive: true, mode: 0o755 });
  mkdirSync("/var/run/wireguard", { recursive: true, mode: 0o755 });
  const cmd = w.implementation === "typetun"
    ? typetun
    : w.implementation === "wireguard-go"
    ? ["wireguard-go"]
    : [w.implementation];
  const log = openSync(`${labDir(state.name)}/${w.node}-${w.name}.log`, "a", 0o600);
  const child = spawn("ip", inNode(ns, w.socketDir, [...cmd, "-f", w.name], "&&"), {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...process.env, WG_PROCESS_FOREGROUND: "1", LOG_LEVEL: process.env.LOG_LEVEL ?? "info" },
  });
  closeSync(log);
  child.unref();
  return child;
}

async function waitSocket(state: LabState, w: StateWireguard, child: ChildProcess): Promise<void> {
  const sock = `${w.socketDir}/${w.name}.sock`;
  const until = Date.now() + DAEMON_START_MS;
  while (Date.now() < until) {
    if (existsSync(sock)) return;
    if (child.exitCode !== null || child.signalCode !== null) break;
    await sleep(25);
  }
  let log = "";
  try {
    log = readFileSync(`${labDir(state.name)}/${w.node}-${w.name}.log`, "utf8").trim();
  } catch { /* none */ }
  throw new StepError(
    `${w.node}:${w.name}: the ${w.implementation} daemon did not start${log ? `: ${log}` : ""}`,
  );
}

/** wg-quick's view of one node: a `.conf` per WireGuard interface. */
function quickConf(w: StateWireguard): string {
  const lines = ["[Interface]", `PrivateKey = ${w.privateKey}`, `ListenPort = ${w.listenPort}`];
  if (w.addresses.length) lines.push(`Address = ${w.addresses.join(", ")}`);
  if (w.mtu) lines.push(`MTU = ${w.mtu}`);
  for (const p of w.peers) {
    lines.push("", `# ${p.to}`, "[Peer]", `PublicKey = ${p.publicKey}`);
    if (p.presharedKey) lines.push(`PresharedKey = ${p.presharedKey}`);
    if (p.allowedIps.length) lines.push(`AllowedIPs = ${p.allowedIps.join(", ")}`);
    if (p.endpoint) lines.push(`Endpoint = ${p.endpoint}`);
    if (p.persistentKeepalive) lines.push(`PersistentKeepalive = ${p.persistentKeepalive}`);
  }
  return lines.join("\n") + "\n";
}

function endpointOf(text: string): Endpoint {
  const m = /^\[?([^\]]+?)\]?:([0-9]+)$/.exec(text)!;
  const a = parseAddress(m[1]!)!;
  return new Endpoint(a.length === 4 ? 4 : 6, a, Number(m[2]));
}

/** Builds the lab; on an error or Ctrl-C, undoes what was made and throws. Returns the state. */
export async function labUp(lab: Lab, file: string, opts: UpOptions = {}): Promise<LabState> {
  const say = opts.say ?? ((l: string) => process.stderr.write(`[#] ${l}\n`));
  const typetun = opts.typetun ?? (() => {
    const [cmd, pre] = selfCommand();
    return [cmd, ...pre];
  })();
  if (readState(lab.name)) {
    throw new StepError(`a lab named '${lab.name}' is already running (typetun lab down ${lab.name})`);
  }
  const state = planState(lab, resolve(file));
  writeState(state);
  let interrupted = false;
  const onSignal = () => (interrupted = true);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const step = (what: string, argv: string[], input?: string) => {
    if (interrupted) throw new StepError("interrupted");
    say(what ? what : argv.join(" "));
    return run(argv, input);
  };
  try {
    for (const n of lab.nodes) {
      const ns = nsOf(lab.name, n.name);
      state.namespaces.push(ns);
      writeState(state);
      try {
        step("", ["ip", "netns", "add", ns]);
      } catch (e) {
        // Someone else's namespace of that name is not ours to delete on the way out.
        state.namespaces.pop();
        writeState(state);
        throw e;
      }
      run(["ip", "-n", ns, "link", "set", "lo", "up"]);
      if (n.forward) {
        const on = ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"];
        step("", ["ip", "netns", "exec", ns, "sysctl", "-qw", ...on]);
      }
      for (const [k, v] of Object.entries(n.sysctls)) {
        step("", ["ip", "netns", "exec", ns, "sysctl", "-qw", `${k}=${v}`]);
      }
    }
    for (const l of lab.links) {
      const [a, b] = l.ends;
      const [na, nb] = [nsOf(lab.name, a.node), nsOf(lab.name, b.node)];
      // Made in the nodes directly, so the same names in several nodes (or labs) never meet.
      step("", [
        "ip",
        "link",
        "add",
        a.ifname,
        "netns",
        na,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        nb,
      ]);
      for (let i = 0; i < 2; i++) {
        const ns = i === 0 ? na : nb, dev = l.ends[i]!.ifname;
        for (const addr of l.addresses[i]!) {
          const extra = addr.family === 6 ? ["nodad"] : [];
          step("", ["ip", "-n", ns, "addr", "add", formatInterfaceAddress(addr), "dev", dev, ...extra]);
        }
        if (l.mtu) run(["ip", "-n", ns, "link", "set", dev, "mtu", String(l.mtu)]);
        run(["ip", "-n", ns, "link", "set", dev, "up"]);
        if (l.netem) {
          const netem = `delay ${l.netem.delayMs}ms loss ${l.netem.lossPercent}%`.split(" ");
          try {
            step("", [
              "ip",
              "netns",
              "exec",
              ns,
              "tc",
              "qdisc",
              "add",
              "dev",
              dev,
              "root",
              "netem",
              ...netem,
            ]);
          } catch (e) {
            // A kernel without sch_netem (some VMs and CI runners) still runs the lab, only without the delay.
            if (!/qdisc kind is unknown/.test((e as Error).message)) throw e;
            say(`warning: this kernel has no netem; ${l.ends[i]!.node}:${dev} runs without delay and loss`);
          }
        }
      }
    }
    for (const n of lab.nodes) {
      if (n.nat) {
        say(`masquerade out of ${n.name}:${n.nat}`);
        natIn(nsOf(lab.name, n.name), n.nat);
      }
    }
    // Daemons: started together (each takes a moment to come up), waited for together.
    const children: [StateWireguard, ChildProcess][] = [];
    for (const w of state.wireguards) {
      if (interrupted) throw new StepError("interrupted");
      say(`${w.node}:${w.name}: ${w.implementation} daemon`);
      const child = startDaemon(state, w, typetun);
      w.pid = child.pid ?? null;
      writeState(state);
      children.push([w, child]);
    }
    for (const [w, child] of children) await waitSocket(state, w, child);
    for (const w of state.wireguards) {
      await labSet(w, {
        privateKey: keyFromBase64(w.privateKey)!,
        listenPort: w.listenPort,
        replacePeers: true,
        peers: [],
      });
      w.listenPort = (await labGet(w)).listenPort;
    }
    // Interfaces, addresses and every route before any peer: a peer with an endpoint and a keepalive sends its
    // first handshake at once, and one sent before the route to it existed is only retried 5 s later.
    for (const w of state.wireguards) {
      const ns = nsOf(lab.name, w.node);
      for (const a of w.addresses) {
        step("", ["ip", "-n", ns, "addr", "add", a, "dev", w.name, ...(a.includes(":") ? ["nodad"] : [])]);
      }
      if (w.mtu) run(["ip", "-n", ns, "link", "set", w.name, "mtu", String(w.mtu)]);
      run(["ip", "-n", ns, "link", "set", w.name, "up"]);
      // Routes to what the peers may send from, as wg-quick adds them, but no default route: a node's default
      // route is the file's to give (`routes`).
      for (const p of w.peers) {
        for (const c of p.allowedIps) {
          if (!/\/0$/.test(c)) run(["ip", "-n", ns, "route", "replace", c, "dev", w.name]);
        }
      }
    }
    for (const n of lab.nodes) {
      const ns = nsOf(lab.name, n.name);
      for (const r of n.routes) step("", ["ip", "-n", ns, "route", "add", ...r.trim().split(/\s+/)]);
    }
    await settle(state);
    // Peers in two rounds: every key first, then endpoints and keepalives. A peer given its endpoint and a
    // keepalive initiates at once; had the other side not known its key yet, that initiation would be dropped and
    // only retried 5 s later (Rekey-Timeout, WireGuard paper section 6.4).
    const byName = new Map(state.wireguards.map((w) => [`${w.node}:${w.name}`, w]));
    for (const w of state.wireguards) {
      if (interrupted) throw new StepError("interrupted");
      for (const p of w.peers) {
        if (p.endpoint) p.endpoint = endpointText(p.endpoint, byName.get(p.to)!.listenPort);
      }
      say(`${w.node}:${w.name}: ${w.peers.length} peer(s)`);
      await labSet(w, {
        replacePeers: true,
        peers: w.peers.map((p) => ({
          publicKey: keyFromBase64(p.publicKey)!,
          remove: false,
          updateOnly: false,
          presharedKey: p.presharedKey ? keyFromBase64(p.presharedKey)! : undefined,
          replaceAllowedIps: true,
          allowedIps: p.allowedIps.map((c) => parseCidr(c)!),
        })),
      });
      writeFileSync(`${labDir(lab.name)}/${w.node}-${w.name}.conf`, quickConf(w), { mode: 0o600 });
    }
    for (const w of state.wireguards) {
      const reaching = w.peers.filter((p) => p.endpoint || p.persistentKeepalive);
      if (!reaching.length) continue;
      await labSet(w, {
        replacePeers: false,
        peers: reaching.map((p) => ({
          publicKey: keyFromBase64(p.publicKey)!,
          remove: false,
          updateOnly: true,
          endpoint: p.endpoint ? endpointOf(p.endpoint) : undefined,
          persistentKeepalive: p.persistentKeepalive,
          replaceAllowedIps: false,
          allowedIps: [],
        })),
      });
    }
    for (const n of lab.nodes) {
      for (const argv of n.exec) step("", ["ip", "netns", "exec", nsOf(lab.name, n.name), ...argv]);
    }
    if (interrupted) throw new StepError("interrupted");
    state.complete = true;
    writeState(state);
    return state;
  } catch (e) {
    say("undoing what was made");
    teardown(state);
    throw e;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/**
 * One ping across each link, both ways, all at once: a new IPv6 neighbour took a second to resolve here, long
 * enough for a first handshake (and `lab check`'s pings) to be lost. After this, the underlay answers at once.
 * A link that drops pings (on purpose) costs this at most two seconds.
 */
async function settle(state: LabState): Promise<void> {
  const pings: Promise<unknown>[] = [];
  for (const l of state.links) {
    for (const [from, to] of [[l.ends[0], l.ends[1]], [l.ends[1], l.ends[0]]] as const) {
      for (const v6 of [false, true]) {
        const mine = from.addresses.some((a) => a.includes(":") === v6);
        const target = to.addresses.find((a) => a.includes(":") === v6)?.replace(/\/[0-9]+$/, "");
        if (!mine || !target) continue;
        const argv = [
          "netns",
          "exec",
          nsOf(state.name, from.node),
          "ping",
          "-n",
          "-c",
          "1",
          "-W",
          "2",
          target,
        ];
        pings.push(new Promise((r) => spawn("ip", argv, { stdio: "ignore" }).on("close", r)));
      }
    }
  }
  await Promise.all(pings);
}

function natIn(ns: string, ifname: string): void {
  // nft and iptables act on the namespace they run in.
  const inner = have("nft")
    ? ["nft", "-f", "-"]
    : ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", ifname, "-j", "MASQUERADE"];
  const rules = [
    "table ip typetun_lab_nat {",
    "  chain post { type nat hook postrouting priority 100; policy accept;",
    `    oifname "${ifname}" masquerade`,
    "  }",
    "}",
    "",
  ].join("\n");
  run(["ip", "netns", "exec", ns, ...inner], inner[0] === "nft" ? rules : undefined);
}

function endpointText(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---- down ----

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Is `pid` still the daemon we started for `ifname` (and not a reused PID)? */
function isOurDaemon(pid: number, ifname: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv.includes(ifname) && argv.includes("-f");
  } catch {
    return false;
  }
}

/** Kills the daemons (by PID), deletes the namespaces, sockets and the state; what is gone already is skipped. */
export function teardown(state: LabState): void {
  const pids = state.wireguards.filter((w) => w.pid && isOurDaemon(w.pid, w.name)).map((w) => w.pid!);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGTERM");
    } catch { /* gone */ }
  }
  const until = Date.now() + 3000;
  while (pids.some(alive) && Date.now() < until) spawnSync("sleep", ["0.05"]);
  for (const pid of pids.filter(alive)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  for (const ns of state.namespaces) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  rmSync(labDir(state.name), { recursive: true, force: true });
}

// ---- show, check ----

interface ShownPeer extends StatePeer {
  latestHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
}

async function liveView(state: LabState) {
  const wgs = [];
  for (const w of state.wireguards) {
    let info: DeviceInfo | null = null;
    try {
      info = await labGet(w);
    } catch { /* daemon gone: shown as down */ }
    const peers: ShownPeer[] = w.peers.map((p) => {
      const live = info?.peers.find((q) => keyToBase64(q.publicKey) === p.publicKey);
      return {
        ...p,
        endpoint: live?.endpoint?.toString() ?? p.endpoint,
        latestHandshakeMs: live?.lastHandshakeMs ?? 0,
        rxBytes: live?.rxBytes ?? 0,
        txBytes: live?.txBytes ?? 0,
      };
    });
    const { privateKey: _secret, ...rest } = w;
    wgs.push({ ...rest, running: info !== null, peers });
  }
  return { name: state.name, file: state.file, nodes: state.nodes, links: state.links, wireguards: wgs };
}

function ago(ms: number): string {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return `${s} s ago`;
}

const bytes = (n: number) =>
  n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;

function showText(v: Awaited<ReturnType<typeof liveView>>): string {
  const out = [
    `lab ${v.name} (${v.file})`,
    `  nodes: ${v.nodes.map((n) => `${n} [${v.name}-${n}]`).join(", ")}`,
  ];
  for (const l of v.links) {
    const end = (e: typeof l.ends[0]) =>
      `${e.node}:${e.ifname}${e.addresses.length ? ` ${e.addresses.join(" ")}` : ""}`;
    out.push(`  link ${end(l.ends[0])} <-> ${end(l.ends[1])}${l.mtu ? ` mtu ${l.mtu}` : ""}`);
  }
  for (const w of v.wireguards) {
    out.push(
      `  wireguard ${w.node}:${w.name} ${w.addresses.join(" ")} port ${w.listenPort} (${w.implementation}, ` +
        `pid ${w.pid ?? "-"}${w.running ? "" : ", not running"})`,
      `    public key ${w.publicKey}`,
    );
    for (const p of w.peers) {
      out.push(
        `    peer ${p.to}${p.endpoint ? ` at ${p.endpoint}` : ""} allowed ${
          p.allowedIps.join(", ") || "(none)"
        }`,
        `      latest handshake: ${ago(p.latestHandshakeMs)}; transfer: ${bytes(p.rxBytes)} received, ` +
          `${bytes(p.txBytes)} sent`,
      );
    }
  }
  return out.join("\n") + "\n";
}

/** Graphviz: nodes as boxes, links solid, tunnels dashed, green with a handshake in the last 3 minutes. */
function showDot(v: Awaited<ReturnType<typeof liveView>>): string {
  const q = (s: string) => JSON.stringify(s);
  const out = [`graph ${q(v.name)} {`, "  node [shape=box];"];
  for (const n of v.nodes) out.push(`  ${q(n)};`);
  for (const l of v.links) {
    const [a, b] = l.ends;
    const label = [`${a.ifname} ${a.addresses.join(" ")}`, `${b.ifname} ${b.addresses.join(" ")}`];
    out.push(`  ${q(a.node)} -- ${q(b.node)} [taillabel=${q(label[0]!)}, headlabel=${q(label[1]!)}];`);
  }
  const seen = new Set<string>();
  for (const w of v.wireguards) {
    for (const p of w.peers) {
      const self = `${w.node}:${w.name}`;
      const key = [self, p.to].sort().join(" ");
      if (seen.has(key)) continue;
      seen.add(key);
      const fresh = p.latestHandshakeMs && Date.now() - p.latestHandshakeMs < 180_000;
      const color = fresh ? "green" : p.latestHandshakeMs ? "orange" : "red";
      out.push(
        `  ${q(w.node)} -- ${q(p.to.split(":")[0]!)} [style=dashed, color=${color}, ` +
          `label=${q(`${w.name} - ${p.to.split(":")[1]}`)}];`,
      );
    }
  }
  out.push("}");
  return out.join("\n") + "\n";
}

interface CheckResult {
  from: string;
  ping: string;
  expect: string;
  pass: boolean;
  rttMs: number | null;
}

/**
 * One after the other: two checks through the same tunnel from both of its ends at once make both sides
 * initiate, each answers the other's initiation, which replaces its own, and neither response is then accepted;
 * the tunnel waits for a retry, 5 s (Rekey-Timeout, WireGuard paper section 6.4). Kept apart, the first check's
 * handshake serves the second. ping exits 0 once any reply came back, so the first packet may go to a handshake.
 */
function runChecks(state: LabState): CheckResult[] {
  return state.checks.map((c) => {
    let reached = false, rttMs: number | null = null;
    if (c.target) {
      const ping = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", c.target];
      const r = spawnSync("ip", ["netns", "exec", nsOf(state.name, c.from), ...ping], {
        encoding: "utf8",
        timeout: 10_000,
      });
      reached = r.status === 0;
      const m = /= [0-9.]+\/([0-9.]+)\//.exec(r.stdout ?? "");
      if (reached && m) rttMs = Number(m[1]);
    }
    return { from: c.from, ping: c.ping, expect: c.expect, pass: reached === (c.expect === "reach"), rttMs };
  });
}

// ---- the subcommand ----

function stateFor(arg: string | undefined): LabState | null {
  if (!arg) return null;
  return readState(labName(arg));
}

function nsExec(state: LabState, node: string, argv: string[], stdio: "inherit"): number {
  // The node's UAPI sockets where wg looks for them, as for its daemons (a node without any has no directory).
  const r = spawnSync("ip", inNode(nsOf(state.name, node), sockDirOf(state.name, node), argv, ";"), {
    stdio,
  });
  if (r.error) {
    process.stderr.write(`typetun lab: ${r.error.message}\n`);
    return 127;
  }
  return r.status ?? 128 + 9;
}

export async function labMain(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const err = (m: string) => {
    process.stderr.write(`typetun lab: ${m}\n`);
    return 1;
  };
  try {
    switch (sub) {
      case "up": {
        if (rest.length !== 1) return err(`usage: typetun lab up FILE`);
        const lab = loadLab(rest[0]!);
        const state = await labUp(lab, rest[0]!);
        process.stdout.write(showText(await liveView(state)));
        process.stdout.write(`state and wg-quick files in ${labDir(state.name)}/\n`);
        return 0;
      }
      case "down": {
        if (rest.length !== 1) return err(`usage: typetun lab down NAME|FILE`);
        const name = labName(rest[0]!);
        const state = readState(name);
        if (!state) {
          process.stdout.write(`lab ${name} is not running: nothing to do\n`);
          return 0;
        }
        teardown(state);
        process.stdout.write(`lab ${name} is down\n`);
        return 0;
      }
      case "exec":
      case "shell": {
        const [name, node, ...cmd] = rest;
        const state = stateFor(name);
        if (!state) return err(`no running lab '${name ?? ""}'`);
        if (!node || !state.nodes.includes(node)) return err(`lab ${state.name} has no node '${node ?? ""}'`);
        if (sub === "exec") {
          const argv = cmd[0] === "--" ? cmd.slice(1) : cmd;
          if (!argv.length) return err(`usage: typetun lab exec NAME NODE -- CMD...`);
          return nsExec(state, node, argv, "inherit");
        }
        return nsExec(state, node, [process.env.SHELL || "sh"], "inherit");
      }
      case "show": {
        const json = rest.includes("--json"), dot = rest.includes("--dot");
        const names = rest.filter((a) => !a.startsWith("--"));
        const states = [];
        for (const n of names.length ? names : runningLabs()) {
          const s = stateFor(n);
          if (!s) return err(`no running lab '${n}'`);
          states.push(await liveView(s));
        }
        if (!states.length && !json) process.stderr.write("no running labs\n");
        if (dot) process.stdout.write(states.map(showDot).join(""));
        else if (json) {
          process.stdout.write(JSON.stringify(names.length === 1 ? states[0] : states, null, 2) + "\n");
        } else process.stdout.write(states.map(showText).join("\n"));
        return 0;
      }
      case "check": {
        if (rest.length !== 1) return err(`usage: typetun lab check NAME|FILE`);
        const state = stateFor(rest[0]);
        if (!state) return err(`no running lab '${rest[0]}'`);
        const results = runChecks(state);
        const rows = results.map((r) => [
          r.pass ? "pass" : "FAIL",
          r.from,
          r.ping,
          r.expect,
          r.rttMs === null ? "-" : `${r.rttMs.toFixed(3)} ms`,
        ]);
        const head = ["result", "from", "ping", "expect", "rtt"];
        const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [head, ...rows]) {
          process.stdout.write(r.map((c, i) => c.padEnd(w[i]!)).join("  ").trimEnd() + "\n");
        }
        const failed = results.filter((r) => !r.pass).length;
        process.stdout.write(`${results.length - failed}/${results.length} checks pass\n`);
        return failed ? 1 : 0;
      }
      case "list": {
        for (const n of runningLabs()) {
          const s = readState(n)!;
          const up = s.wireguards.filter((w) => w.pid && alive(w.pid)).length;
          process.stdout.write(
            `${n}\t${s.file}\t${s.nodes.length} nodes, ${up}/${s.wireguards.length} daemons` +
              `${s.complete ? "" : " (incomplete)"}\n`,
          );
        }
        return 0;
      }
      default:
        process.stderr.write(USAGE);
        return sub === "help" || sub === "--help" ? 0 : 1;
    }
  } catch (e) {
    if (e instanceof LabError) {
      process.stderr.write(e.problems.join("\n") + "\n");
      return 1;
    }
    if (e instanceof StepError) return err(e.message);
    throw e;
  }
}
