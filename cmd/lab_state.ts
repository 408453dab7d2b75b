/**
 * What a running lab leaves in `/run/typetun/lab/NAME/state.json`: every namespace and daemon `lab up` made
 * (recorded *before* each is made, so `lab down` finds it even after `lab up` was killed with SIGKILL), the
 * generated keys, and a plain-text view of the topology for `lab show` and `lab check`.
 * @module
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";

export const LAB_DIR = "/run/typetun/lab";

export interface StateEnd {
  node: string;
  ifname: string;
  addresses: string[];
}

export interface StatePeer {
  /** "node:name" of the other interface. */
  to: string;
  publicKey: string;
  presharedKey: string | null;
  endpoint: string | null;
  allowedIps: string[];
  persistentKeepalive: number;
}

export interface StateWireguard {
  node: string;
  name: string;
  addresses: string[];
  implementation: string;
  /** The chosen port once the daemon bound it (0 before). */
  listenPort: number;
  mtu: number | null;
  privateKey: string;
  publicKey: string;
  /** The directory bind-mounted over /var/run/wireguard for the daemon: its UAPI socket is there. */
  socketDir: string;
  pid: number | null;
  peers: StatePeer[];
}

export interface LabState {
  name: string;
  file: string;
  /** Namespaces, each added here before `ip netns add`. */
  namespaces: string[];
  nodes: string[];
  links: { ends: [StateEnd, StateEnd]; mtu: number | null }[];
  wireguards: StateWireguard[];
  checks: { line: number; from: string; ping: string; target: string | null; expect: "reach" | "blocked" }[];
  /** False while `lab up` is still building. */
  complete: boolean;
}

export function labDir(name: string): string {
  return `${LAB_DIR}/${name}`;
}

/** Written to a temporary name and renamed, so a SIGKILL never leaves half a file. */
export function writeState(s: LabState): void {
  const dir = labDir(s.name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(`${dir}/state.json.tmp`, JSON.stringify(s, null, 1) + "\n", { mode: 0o600 });
  renameSync(`${dir}/state.json.tmp`, `${dir}/state.json`);
}

export function readState(name: string): LabState | null {
  const path = `${labDir(name)}/state.json`;
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, "utf8")) as LabState;
}

/** The names of the labs with a state directory. */
export function runningLabs(): string[] {
  try {
    return readdirSync(LAB_DIR).filter((n) => existsSync(`${LAB_DIR}/${n}/state.json`)).sort();
  } catch {
    return [];
  }
}
