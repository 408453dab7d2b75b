/**
 * A lab: a whole WireGuard topology described in one TOML file (`typetun lab up FILE`). This module is the
 * model the file parses into. Names are checked, addresses parsed and every reference resolved, so the code
 * that builds a lab (cmd/lab*.ts) never meets a dangling name. Pure: no I/O.
 * @module
 */
import type { InterfaceAddress } from "./config.ts";
import type { Cidr } from "./ip.ts";

/** A whole lab, as parsed and checked. */
export interface Lab {
  /** The lab's name; its namespaces are `<name>-<node>`. */
  name: string;
  /** In file order. */
  nodes: LabNode[];
  links: LabLink[];
  wireguards: LabWireguard[];
  checks: LabCheck[];
}

/** `[node.NAME]`: a network namespace. */
export interface LabNode {
  name: string;
  /** The line of its table, for messages. */
  line: number;
  /** `ip route add` arguments, v4 or v6 (e.g. "0.0.0.0/0 via 192.0.2.1"). */
  routes: string[];
  /** IPv4 and IPv6 forwarding on. */
  forward: boolean;
  /** Masquerade what leaves through this interface of the node, or null. */
  nat: string | null;
  /** Extra sysctls inside the node (`net.ipv4.conf.all.rp_filter = "0"`). */
  sysctls: Record<string, string>;
  /** Commands run inside the node once its links and interfaces exist (argv, no shell). */
  exec: string[][];
}

/** One end of a link: a node's interface. */
export interface LinkEnd {
  node: string;
  ifname: string;
}

/** `[[link]]`: a veth pair between two nodes. */
export interface LabLink {
  line: number;
  ends: [LinkEnd, LinkEnd];
  /** Per end, zero or more addresses with their prefix. */
  addresses: [InterfaceAddress[], InterfaceAddress[]];
  mtu: number | null;
  /** tc netem on both ends, or null. */
  netem: { delayMs: number; lossPercent: number } | null;
}

/** Which program runs a WireGuard interface's daemon. */
export type Implementation = { kind: "typetun" } | { kind: "wireguard-go" } | { kind: "path"; path: string };

/** `[[wireguard]]`: a WireGuard interface on a node. */
export interface LabWireguard {
  line: number;
  node: string;
  name: string;
  addresses: InterfaceAddress[];
  /** null: random. */
  listenPort: number | null;
  implementation: Implementation;
  mtu: number | null;
  peers: LabPeer[];
}

/** `[[wireguard.peer]]`: a peer of the interface above it; keys are generated for the lab. */
export interface LabPeer {
  line: number;
  /** The other [[wireguard]] of the lab. */
  to: { node: string; name: string };
  /** The address of that node's interface (its first address) and the peer's listen port, or none. */
  endpoint: LinkEnd | null;
  /** Given, or by default the peer interface's addresses as /32 and /128. */
  allowedIps: Cidr[];
  /** Seconds; 0 is off. */
  persistentKeepalive: number;
  /** Generate one preshared key, shared by both sides. */
  presharedKey: boolean;
}

/** `[[check]]`: an expectation for `lab check`. */
export interface LabCheck {
  line: number;
  from: string;
  /** What to ping: an address, or "node:ifname" for that interface's first address. */
  ping: string;
  expect: "reach" | "blocked";
}

/** Everything wrong with a lab file, each problem as "file:line: message", found in one pass. */
export class LabError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "LabError";
  }
}

/** Linux interface names have at most 15 bytes (IFNAMSIZ − 1). */
export const IFNAME_MAX = 15;
