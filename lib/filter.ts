/**
 * Per-peer packet filters: which connections a peer may open to us (`AllowInbound`) and we to it
 * (`AllowOutbound`), beyond what its allowed IPs already say, enforced in the data plane as a
 * {@link PacketHook} (as Tailscale's tstun filters around its TUN), so no host firewall is needed.
 *
 * The filter is stateful: a packet that opens a connection (of either direction) is checked against the rules
 * of its direction, and once it passes, the connection is remembered, so its replies pass both ways ("established",
 * as nf_conntrack). ICMP errors pass when the packet they quote belongs to a remembered connection. The state
 * is bounded (lib/conntrack.ts, the least recently used is evicted) and entries expire when idle.
 *
 * Fragments: the first fragment of a datagram is judged as a whole datagram (and must hold the whole transport
 * header, RFC 1858); a later fragment passes only if the first fragment of its datagram (same peer, addresses,
 * protocol and identification) passed within FRAGMENT_TIMEOUT. Fragments arriving before their first are dropped.
 *
 * Rule syntax (one direction, comma-separated): `any` | `none` | RULE, …
 *   RULE = PROTO [`/` PORT | PORT`-`PORT] [`@` PREFIX]
 *   PROTO = `tcp` | `udp` | `icmp` (ICMP and ICMPv6) | `any`
 * Ports and the prefix are those of the packet's destination, the side being connected to: for AllowInbound
 * our port and address, for AllowOutbound the peer's. Examples: `tcp/22, icmp`; `tcp/8000-8100@10.0.0.0/24`;
 * `udp/53@fd00::53/128, any@10.9.0.0/16`.
 * @module
 */
import { ConnTable } from "./conntrack.ts";
import type { Clock, PacketHook, Peer } from "./device.ts";
import { type Cidr, formatCidr, parseCidr } from "./ip.ts";
import {
  Fragment,
  IcmpKind,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  KEY_WORDS,
  parseTuple,
  Tuple,
  writeKey,
} from "./tuple.ts";

/** One allowed kind of connection. `proto` 0 is any protocol; ports are inclusive (0-65535 for any). */
export interface FilterRule {
  proto: number;
  portLo: number;
  portHi: number;
  prefix: Cidr | null;
}

/** The rules of one direction: null allows every new connection, [] none (only replies pass). */
export type Rules = FilterRule[] | null;

/** A rule list that does not parse; the message says where and what was expected. */
export class FilterSyntaxError extends Error {
  override name = "FilterSyntaxError";
}

/** Connections remembered by default (about 80 bytes each). */
export const DEFAULT_STATE_CAPACITY = 8192;
/** Datagrams whose first fragment passed, remembered for their later fragments. */
const FRAGMENT_CAPACITY = 1024;

/**
 * Idle time after which a remembered connection is forgotten, in milliseconds: TCP 2 h 4 min (RFC 5382 REQ-5,
 * the least a NAT must keep an established TCP mapping), UDP 3 min (RFC 4787 REQ-5 asks at least 2), ICMP 30 s
 * (the kernel's nf_conntrack_icmp_timeout), other protocols 10 min (nf_conntrack_generic_timeout).
 */
export const TCP_TIMEOUT = 124 * 60_000;
export const UDP_TIMEOUT = 180_000;
export const ICMP_TIMEOUT = 30_000;
export const OTHER_TIMEOUT = 600_000;
/** How long the later fragments of a datagram may follow its first (the kernel's ipfrag_time, 30 s). */
export const FRAGMENT_TIMEOUT = 30_000;

const PROTOS: Record<string, number> = { any: 0, tcp: IPPROTO_TCP, udp: IPPROTO_UDP, icmp: IPPROTO_ICMP };

/**
 * Parses a rule list as written after `AllowInbound =` / `AllowOutbound =` or in the UAPI (`allow_inbound=`).
 * Spaces are ignored; names are case-insensitive. `any` alone is null (no restriction), `none` alone [].
 * @throws FilterSyntaxError
 */
export function parseRules(text: string): Rules {
  const s = text.replace(/\s+/g, "").toLowerCase();
  if (s === "any") return null;
  if (s === "none") return [];
  if (s === "") throw new FilterSyntaxError(`empty rule list (use "none" to allow no new connections)`);
  const rules: FilterRule[] = [];
  for (const item of s.split(",")) {
    const m = /^([a-z0-9]*)(?:\/([0-9]+)(?:-([0-9]+))?)?(?:@(.+))?$/.exec(item);
    const proto = m ? PROTOS[m[1]!] : undefined;
    if (!m || proto === undefined) {
      throw new FilterSyntaxError(
        `bad rule ${
          JSON.stringify(item)
        } (expected tcp, udp, icmp or any, then /PORT or /PORT-PORT, then @PREFIX)`,
      );
    }
    let portLo = 0, portHi = 0xffff;
    if (m[2] !== undefined) {
      if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) {
        throw new FilterSyntaxError(`bad rule ${JSON.stringify(item)}: only tcp and udp have ports`);
      }
      portLo = Number(m[2]);
      portHi = m[3] === undefined ? portLo : Number(m[3]);
      if (portLo > 0xffff || portHi > 0xffff || portLo > portHi) {
        throw new FilterSyntaxError(`bad port range in ${JSON.stringify(item)} (0-65535, low-high)`);
      }
    }
    let prefix: Cidr | null = null;
    if (m[4] !== undefined) {
      prefix = m[4].includes("%") ? null : parseCidr(m[4]);
      if (!prefix) {
        throw new FilterSyntaxError(`bad prefix ${JSON.stringify(m[4])} in ${JSON.stringify(item)}`);
      }
    }
    rules.push({ proto, portLo, portHi, prefix });
  }
  return rules;
}

/** The canonical text of a rule list, which {@link parseRules} reads back to the same rules. */
export function formatRules(rules: Rules): string {
  if (rules === null) return "any";
  if (rules.length === 0) return "none";
  return rules.map((r) => {
    let s = r.proto === 0
      ? "any"
      : r.proto === IPPROTO_TCP
      ? "tcp"
      : r.proto === IPPROTO_UDP
      ? "udp"
      : "icmp";
    if (r.portLo !== 0 || r.portHi !== 0xffff) {
      s += r.portLo === r.portHi ? `/${r.portLo}` : `/${r.portLo}-${r.portHi}`;
    }
    if (r.prefix) s += `@${formatCidr(r.prefix)}`;
    return s;
  }).join(",");
}

/** A peer's two directions. */
export interface PeerRules {
  inbound: Rules;
  outbound: Rules;
}

/** What a peer has: its rules and its drop counts. */
interface PeerFilter extends PeerRules {
  id: number;
  droppedInbound: number;
  droppedOutbound: number;
}

/** Whether `rules` let `t` open a connection: its protocol, destination port and destination address. */
export function allows(rules: Rules, t: Tuple): boolean {
  if (rules === null) return true;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (r.proto !== 0 && r.proto !== t.proto) continue;
    if (t.dstPort < r.portLo || t.dstPort > r.portHi) continue; // only tcp and udp rules narrow them
    if (r.prefix && !inPrefix(r.prefix, t)) continue;
    return true;
  }
  return false;
}

function inPrefix(c: Cidr, t: Tuple): boolean {
  if (c.family !== t.family) return false;
  let bits = c.prefixLen;
  for (let w = 0; bits > 0; w++, bits -= 32) {
    const a = c.addr;
    const want = ((a[4 * w]! << 24) | (a[4 * w + 1]! << 16) | (a[4 * w + 2]! << 8) | a[4 * w + 3]!) >>> 0;
    const mask = bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    if (((t.dst[w]! & mask) >>> 0) !== ((want & mask) >>> 0)) return false;
  }
  return true;
}

function timeoutOf(proto: number): number {
  return proto === IPPROTO_TCP
    ? TCP_TIMEOUT
    : proto === IPPROTO_UDP
    ? UDP_TIMEOUT
    : proto === IPPROTO_ICMP
    ? ICMP_TIMEOUT
    : OTHER_TIMEOUT;
}

/**
 * The filter of a device: rules per peer, and the connections they let through. A peer without rules is not
 * looked at beyond one map lookup; a device whose peers have none needs no filter hook at all
 * ({@link active}).
 */
export class PacketFilter implements PacketHook {
  readonly state: ConnTable;
  /** When each remembered connection was last seen (clock ms). */
  readonly #seen: Float64Array;
  readonly fragments = new ConnTable(FRAGMENT_CAPACITY);
  readonly #fragSeen = new Float64Array(FRAGMENT_CAPACITY);
  readonly #rules = new Map<Peer, PeerFilter>();
  readonly #clock: Clock;
  readonly #tuple = new Tuple();
  readonly #key = new Uint32Array(KEY_WORDS);
  #nextId = 1;
  #lastPeer: Peer | null = null;
  #lastRules: PeerFilter | undefined = undefined;

  constructor(clock: Clock, capacity = DEFAULT_STATE_CAPACITY) {
    this.#clock = clock;
    this.state = new ConnTable(capacity);
    this.#seen = new Float64Array(capacity);
  }

  /** True while some peer has rules: only then does the device need this hook. */
  get active(): boolean {
    return this.#rules.size > 0;
  }

  /**
   * Sets a peer's rules; a direction left undefined keeps what it had. A peer whose both directions are
   * `any` has no filter. Its remembered connections stay (they were allowed when they started).
   */
  set(peer: Peer, inbound: Rules | undefined, outbound: Rules | undefined): void {
    const had = this.#rules.get(peer);
    const next: PeerRules = {
      inbound: inbound === undefined ? had?.inbound ?? null : inbound,
      outbound: outbound === undefined ? had?.outbound ?? null : outbound,
    };
    this.#lastPeer = null;
    if (next.inbound === null && next.outbound === null) {
      this.#rules.delete(peer);
      return;
    }
    if (had) {
      had.inbound = next.inbound;
      had.outbound = next.outbound;
    } else {
      this.#rules.set(peer, { ...next, id: this.#nextId++, droppedInbound: 0, droppedOutbound: 0 });
    }
  }

  /** A peer's rules, or null when it has none. */
  rulesOf(peer: Peer): (PeerRules & { droppedInbound: number; droppedOutbound: number }) | null {
    return this.#rules.get(peer) ?? null;
  }

  /** Forgets the rules of peers removed from the device (`dead`); their connections age out. */
  prune(): void {
    for (const peer of this.#rules.keys()) if (peer.dead) this.#rules.delete(peer);
    this.#lastPeer = null;
  }

  outbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    const f = peer === this.#lastPeer ? this.#lastRules : this.#lookup(peer);
    if (f === undefined) return true;
    if (this.#check(f, buf, off, len, true)) return true;
    f.droppedOutbound++;
    return false;
  }

  inbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    const f = peer === this.#lastPeer ? this.#lastRules : this.#lookup(peer);
    if (f === undefined) return true;
    if (this.#check(f, buf, off, len, false)) return true;
    f.droppedInbound++;
    return false;
  }

  #lookup(peer: Peer): PeerFilter | undefined {
    this.#lastPeer = peer;
    return (this.#lastRules = this.#rules.get(peer));
  }

  #check(f: PeerFilter, buf: Uint8Array, off: number, len: number, out: boolean): boolean {
    const t = this.#tuple;
    // What cannot be read cannot be judged: a filtered peer's malformed packets are dropped.
    if (!parseTuple(t, buf, off, len)) return false;
    const now = this.#clock.now();
    const key = this.#key;
    if (t.fragment === Fragment.Later) return this.#fragmentSeen(t, f.id, now);
    if (t.icmp === IcmpKind.Error) {
      // An error about a packet of a remembered connection: the quoted packet went the other way.
      writeKey(t.inner!, !out, f.id, key);
      if (this.#fresh(this.state.find(key), t.inner!.proto, now) >= 0) return true;
      // Otherwise it is a new ICMP message, judged by the rules like any other (`icmp` allows it).
      return allows(out ? f.outbound : f.inbound, t);
    }
    writeKey(t, out, f.id, key);
    let i = this.#fresh(this.state.find(key), t.proto, now);
    if (i < 0) {
      if (!allows(out ? f.outbound : f.inbound, t)) return false;
      i = this.state.find(key);
      if (i < 0) i = this.state.insert(key);
    }
    this.state.touch(i);
    this.#seen[i] = now;
    if (t.fragment === Fragment.First) this.#rememberFragment(t, f.id, now);
    return true;
  }

  /** `i` if it is a connection seen within its protocol's timeout, else -1. */
  #fresh(i: number, proto: number, now: number): number {
    return i >= 0 && now - this.#seen[i]! <= timeoutOf(proto) ? i : -1;
  }

  /** The key of a fragmented datagram: its addresses as sent, its protocol and its identification. */
  #fragmentKey(t: Tuple, id: number): Uint32Array {
    writeKey(t, true, id, this.#key);
    this.#key[10] = t.fragId;
    this.#key[11] = 0;
    return this.#key;
  }

  #rememberFragment(t: Tuple, id: number, now: number): void {
    const key = this.#fragmentKey(t, id);
    let i = this.fragments.find(key);
    if (i < 0) i = this.fragments.insert(key);
    else this.fragments.touch(i);
    this.#fragSeen[i] = now;
  }

  #fragmentSeen(t: Tuple, id: number, now: number): boolean {
    const i = this.fragments.find(this.#fragmentKey(t, id));
    return i >= 0 && now - this.#fragSeen[i]! <= FRAGMENT_TIMEOUT;
  }
}
