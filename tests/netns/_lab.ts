/**
 * A small lab for namespace tests: namespaces and veth pairs the test creates, daemons it starts by PID, and a
 * cleanup that removes all of it. Everything is bounded in time; traffic stays inside the namespaces.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import process from "node:process";

export const isRoot = process.getuid?.() === 0;

export function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Why a namespace test cannot run here, or null when it can. */
export function cannotRun(...tools: string[]): string | null {
  if (!isRoot) return "needs root";
  for (const t of ["ip", ...tools]) if (!have(t)) return `needs ${t}`;
  return null;
}

/** The command that starts typetun: TYPETUN_BIN (e.g. the compiled dist/typetun) or this runtime on main.ts. */
export function typetunCommand(): string[] {
  const bin = process.env.TYPETUN_BIN;
  if (bin) return [bin];
  const main = new URL("../../main.ts", import.meta.url).pathname;
  return [process.execPath, "run", "-A", main];
}

let serial = 0;
/** A short unique tag for names of namespaces and interfaces (interface names have at most 15 bytes). */
export function tag(): string {
  return `${(process.pid % 10000).toString(36)}${(serial++).toString(36)}`;
}

export function sh(cmd: string, timeoutMs = 30_000): string {
  return execFileSync("sh", ["-c", cmd], {
    encoding: "utf8",
    timeout: timeoutMs,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs a command inside a namespace and returns stdout; throws with its stderr if it fails. */
export function inNs(ns: string, cmd: string, timeoutMs = 30_000): string {
  return sh(`ip netns exec ${ns} sh -c '${cmd.replaceAll("'", `'"'"'`)}'`, timeoutMs);
}

export class Lab {
  readonly namespaces: string[] = [];
  readonly children: ChildProcess[] = [];
  readonly logs = new Map<ChildProcess, string>();
  readonly sockets: string[] = [];

  ns(name: string): string {
    sh(`ip netns add ${name}`);
    this.namespaces.push(name);
    sh(`ip -n ${name} link set lo up`);
    return name;
  }

  /** A veth pair between two namespaces with the given addresses (v4 /24 and v6 /64 each); returns the names. */
  veth(a: string, b: string, addrA: [string, string], addrB: [string, string]): [string, string] {
    const t = tag();
    sh(`ip link add va${t} netns ${a} type veth peer name vb${t} netns ${b}`);
    sh(
      `ip -n ${a} addr add ${addrA[0]}/24 dev va${t} && ip -n ${a} addr add ${addrA[1]}/64 dev va${t} nodad`,
    );
    sh(
      `ip -n ${b} addr add ${addrB[0]}/24 dev vb${t} && ip -n ${b} addr add ${addrB[1]}/64 dev vb${t} nodad`,
    );
    sh(`ip -n ${a} link set va${t} up && ip -n ${b} link set vb${t} up`);
    return [`va${t}`, `vb${t}`];
  }

  /**
   * Starts `typetun -f IFNAME` (or another implementation's `command`, called the same way, such as
   * wireguard-go) in `ns` or in the current namespace, and waits until its UAPI socket exists.
   */
  async daemon(
    ifname: string,
    ns: string | null,
    env: Record<string, string> = {},
    command: string[] = typetunCommand(),
  ): Promise<ChildProcess> {
    const [cmd, ...args] = command;
    const argv = ns ? ["netns", "exec", ns, cmd!, ...args, "-f", ifname] : [...args, "-f", ifname];
    const child = spawn(ns ? "ip" : cmd!, argv, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, LOG_LEVEL: "info", ...env },
    });
    this.children.push(child);
    this.logs.set(child, "");
    child.stderr!.on("data", (d) => this.logs.set(child, this.logs.get(child) + d.toString()));
    const sock = `/var/run/wireguard/${ifname}.sock`;
    this.sockets.push(sock);
    for (let i = 0; i < 100; i++) {
      if (existsSync(sock)) return child;
      if (child.exitCode !== null) break;
      await sleep(50);
    }
    throw new Error(`daemon ${ifname} did not start: ${this.logs.get(child)}`);
  }

  /** Kills what the test started (by PID) and deletes its namespaces. */
  cleanup(): void {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
    for (const n of this.namespaces) spawnSync("ip", ["netns", "del", n], { stdio: "ignore" });
    // A daemon killed outright leaves its sockets behind: the UAPI's and, beside it, capture's (IF.capture).
    for (const s of this.sockets) {
      rmSync(s, { force: true });
      if (s.endsWith(".sock")) rmSync(s.slice(0, -".sock".length) + ".capture", { force: true });
    }
  }
}

/** A namespace test with its own Lab, always cleaned up; `skip` (from cannotRun) ignores it. */
export function labTest(name: string, skip: string | null, fn: (lab: Lab) => Promise<void> | void): void {
  Deno.test({
    name,
    ignore: skip !== null,
    // Daemons and child processes outlive single steps on purpose; cleanup() ends them.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const lab = new Lab();
      try {
        await fn(lab);
      } finally {
        lab.cleanup();
      }
    },
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits for a child to exit, at most `ms`; returns its exit code, or null if it is still running. */
export function waitExit(child: ChildProcess, ms: number): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const onExit = (code: number | null) => {
      clearTimeout(t);
      resolve(code ?? -1);
    };
    const t = setTimeout(() => {
      child.off("exit", onExit);
      resolve(null);
    }, ms);
    child.once("exit", onExit);
  });
}

/** Generates a key pair with `wg`. */
export function wgKeys(): { priv: string; pub: string } {
  const priv = sh("wg genkey").trim();
  const pub = sh(`echo ${priv} | wg pubkey`).trim();
  return { priv, pub };
}

/** `wg set` with the private key passed through a file, as wg requires. */
export function wgSet(ifname: string, privateKey: string | null, rest: string): void {
  if (privateKey) {
    sh(
      `f=$(mktemp) && echo ${privateKey} > $f && wg set ${ifname} private-key $f ${rest}; r=$?; rm -f $f; exit $r`,
    );
  } else {
    sh(`wg set ${ifname} ${rest}`);
  }
}

/** One side of a WireGuard pair in a lab: its namespace, its running daemon's interface, its listen port. */
export interface PairSide {
  ns: string;
  wg: string;
  port: number;
}

/**
 * Makes two running daemons peers with `wg set`: `a` knows `b`'s endpoint at `bOuter` (so `a` initiates), each
 * allows the other's inner address (`${inner}.1` for `a`, `${inner}.2` for `b`, as /32), and each interface gets
 * its address (/24) and goes up. Returns the generated keys.
 */
export function joinPair(
  a: PairSide,
  b: PairSide,
  bOuter: string,
  inner = "10.243.0",
): { a: { priv: string; pub: string }; b: { priv: string; pub: string } } {
  const ka = wgKeys(), kb = wgKeys();
  wgSet(
    a.wg,
    ka.priv,
    `listen-port ${a.port} peer ${kb.pub} allowed-ips ${inner}.2/32 endpoint ${bOuter}:${b.port}`,
  );
  wgSet(b.wg, kb.priv, `listen-port ${b.port} peer ${ka.pub} allowed-ips ${inner}.1/32`);
  for (const [side, n] of [[a, 1], [b, 2]] as const) {
    sh(
      `ip -n ${side.ns} addr add ${inner}.${n}/24 dev ${side.wg} && ip -n ${side.ns} link set ${side.wg} up`,
    );
  }
  return { a: ka, b: kb };
}
