/**
 * IP addresses, prefixes and UDP endpoints as bytes, and the few IP header fields the device reads.
 * Addresses are 4 or 16 bytes in network order; text forms follow RFC 4291 / RFC 5952.
 * @module
 */

export type Family = 4 | 6;

/** An address prefix such as 10.0.0.0/8 or fd00::/64. `addr` has its host bits cleared. */
export interface Cidr {
  readonly family: Family;
  readonly addr: Uint8Array;
  readonly prefixLen: number;
}

/** No local address: the kernel chooses the source by its routing table. */
export const NO_ADDRESS: Uint8Array = new Uint8Array(0);

/**
 * A UDP endpoint: where a peer was last heard from, or where it was configured to be. One heard from also
 * remembers our end of it, the *sticky source*: the local address the peer wrote to and the interface it
 * arrived on (IP_PKTINFO, ip(7); IPV6_PKTINFO, ipv6(7)). Replies leave from that address, as the kernel
 * module (socket.c, `endpoint->src4`/`src6`) and wireguard-go's StdNetBind do, so that on a host with several
 * addresses the peer sees its replies come from where it sent, not from the route's primary address (which
 * a NAT or the peer's roaming would take for another host). A configured endpoint has no source (`local` empty).
 */
export class Endpoint {
  /** The sticky source address (4 or 16 bytes), or {@link NO_ADDRESS}. */
  local: Uint8Array;
  /** The interface the sticky source was seen on (0: any). */
  ifindex: number;

  constructor(
    readonly family: Family,
    readonly addr: Uint8Array,
    readonly port: number,
    local: Uint8Array = NO_ADDRESS,
    ifindex = 0,
  ) {
    this.local = local.length === addr.length ? local : NO_ADDRESS;
    this.ifindex = this.local.length > 0 ? ifindex : 0;
  }

  /** Compares with an address and port given as raw bytes, without allocating (used per packet). */
  matches(addr: Uint8Array, port: number): boolean {
    if (port !== this.port || addr.length !== this.addr.length) return false;
    for (let i = 0; i < addr.length; i++) if (addr[i] !== this.addr[i]) return false;
    return true;
  }

  /**
   * Whether a datagram that arrived at `local` on `ifindex` leaves the sticky source as it is. A datagram
   * that does not know where it arrived (`local` absent or empty: an in-memory transport, a socket without
   * PKTINFO) changes nothing.
   */
  sameLocal(local: Uint8Array | undefined, ifindex: number | undefined): boolean {
    if (local === undefined || local.length === 0) return true;
    if (local.length !== this.local.length || (ifindex ?? 0) !== this.ifindex) return false;
    for (let i = 0; i < local.length; i++) if (local[i] !== this.local[i]) return false;
    return true;
  }

  /**
   * Forgets the sticky source, so the kernel chooses again: the address is gone (a send with it failed with
   * EINVAL or EADDRNOTAVAIL), as the kernel module and wireguard-go clear it. The next datagram from the peer
   * sets it again.
   */
  clearLocal(): void {
    this.local = NO_ADDRESS;
    this.ifindex = 0;
  }

  /** `192.0.2.1:51820` or `[2001:db8::1]:51820`, as `wg` prints endpoints. */
  toString(): string {
    const a = formatAddress(this.addr);
    return this.family === 6 ? `[${a}]:${this.port}` : `${a}:${this.port}`;
  }
}

/** Parses a dotted-quad IPv4 address; null if it is not exactly one. */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses an IPv6 address in any RFC 4291 text form, including an embedded IPv4 tail; null if invalid. */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.includes("%")) s = s.slice(0, s.indexOf("%")); // zone ids are not part of the address
  const halves = s.split("::");
  if (halves.length > 2) return null;
  // A dotted IPv4 tail may only end the whole address (RFC 4291 section 2.2, form 3), never precede "::".
  const groups = (h: string, ipv4Tail: boolean): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (ipv4Tail && i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (!head || !tail) return null;
  const n = head.length + tail.length;
  if (halves.length === 2 ? n > 7 : n !== 8) return null;
  const all = [...head, ...new Array<number>(8 - n).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

export function parseAddress(s: string): Uint8Array | null {
  return s.includes(":") ? parseIPv6(s) : parseIPv4(s);
}

/** Formats 4 bytes as dotted quad, 16 bytes in RFC 5952 canonical form (longest zero run compressed). */
export function formatAddress(a: Uint8Array): string {
  if (a.length === 4) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((a[2 * i]! << 8) | a[2 * i + 1]!);
  // IPv4-mapped addresses keep their dotted tail, as inet_ntop prints them.
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  }
  let bestAt = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [bestAt, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestAt < 0) return hex.join(":");
  return `${hex.slice(0, bestAt).join(":")}::${hex.slice(bestAt + bestLen).join(":")}`;
}

/** Clears the bits of `addr` beyond `prefixLen`, returning a new array. */
export function maskAddress(addr: Uint8Array, prefixLen: number): Uint8Array {
  const out = addr.slice();
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLen - 8 * i));
    out[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

/** Parses `addr/len` (or a bare address, meaning a host route) into a masked prefix; null if invalid. */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf("/");
  const addr = parseAddress(slash < 0 ? s : s.slice(0, slash));
  if (!addr) return null;
  const max = addr.length * 8;
  let prefixLen = max;
  if (slash >= 0) {
    const l = s.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(l) || Number(l) > max) return null;
    prefixLen = Number(l);
  }
  return { family: addr.length === 4 ? 4 : 6, addr: maskAddress(addr, prefixLen), prefixLen };
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress(c.addr)}/${c.prefixLen}`;
}

/**
 * Splits `host:port` or `[host]:port` as wg(8) does (config.c, parse_endpoint): without brackets the host is
 * everything before the last colon. The port must be decimal, 0-65535. Null if malformed.
 */
export function splitHostPort(s: string): { host: string; port: number; bracketed: boolean } | null {
  let host: string, port: string;
  const bracketed = s.startsWith("[");
  if (bracketed) {
    const close = s.indexOf("]");
    if (close < 0 || s[close + 1] !== ":") return null;
    host = s.slice(1, close);
    port = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(":");
    if (colon < 0) return null;
    host = s.slice(0, colon);
    port = s.slice(colon + 1);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return null;
  return { host, port: Number(port), bracketed };
}

/**
 * Parses an endpoint as `wg` accepts a literal one: `1.2.3.4:51820` or `[2001:db8::1]:51820`. Host names are
 * resolved by the caller (cmd/), never here.
 */
export function parseEndpoint(s: string): Endpoint | null {
  const hp = splitHostPort(s);
  // A bare IPv6 address must be bracketed here.
  if (!hp || (!hp.bracketed && hp.host.includes(":"))) return null;
  const addr = parseAddress(hp.host);
  if (!addr) return null;
  return new Endpoint(addr.length === 4 ? 4 : 6, addr, hp.port);
}

// ---- IP packet headers (RFC 791, RFC 8200): what cryptokey routing needs to read ----

export const IPV4_HEADER_LEN = 20;
export const IPV6_HEADER_LEN = 40;
/** Offsets of the source and destination addresses in each header. */
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;

/** The IP version of the packet at `p[off, off+len)`: 4, 6, or 0 if too short for a header of that version. */
export function ipVersion(p: Uint8Array, off = 0, len = p.length - off): Family | 0 {
  if (len < 1) return 0;
  const v = p[off]! >> 4;
  if (v === 4 && len >= IPV4_HEADER_LEN) return 4;
  if (v === 6 && len >= IPV6_HEADER_LEN) return 6;
  return 0;
}

/** The length the IP header claims for the whole packet (so padding after it can be cut off). */
export function ipTotalLength(p: Uint8Array, off = 0): number {
  const v = p[off]! >> 4;
  if (v === 4) return (p[off + 2]! << 8) | p[off + 3]!;
  return IPV6_HEADER_LEN + ((p[off + 4]! << 8) | p[off + 5]!);
}
