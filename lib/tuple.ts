/**
 * The connection a plaintext IP packet belongs to: protocol, addresses, ports (the ICMP echo identifier for
 * pings), and what a packet filter needs besides (fragment, TCP flags, the packet an ICMP error quotes).
 * Per-connection statistics (lib/connstats.ts) and per-peer filters (lib/filter.ts) both read packets through
 * {@link parseTuple}, as the kernel's nf_conntrack_tuple and Tailscale's packet.Parsed do.
 *
 * Pure and allocation-free: one preallocated {@link Tuple} is filled per packet. Truncated or malformed
 * headers make parseTuple return false; it never reads outside `buf[off, off+len)` and never throws.
 * @module
 */

import { IPPROTO_TCP, IPPROTO_UDP } from "./gso.ts";

export { IPPROTO_TCP, IPPROTO_UDP };
export const IPPROTO_ICMP = 1;
export const IPPROTO_ICMPV6 = 58;

/** Whether (and which) fragment of a datagram a packet is (RFC 791 section 3.2, RFC 8200 section 4.5). */
export const enum Fragment {
  /** A whole datagram. */
  None = 0,
  /** The first fragment: offset 0, more fragments follow; it carries the transport header. */
  First = 1,
  /** A later fragment: no transport header, so no ports (they are 0). */
  Later = 2,
}

/** What kind of ICMP message a packet is (RFC 792, RFC 4443). */
export const enum IcmpKind {
  /** Not ICMP. */
  None = 0,
  /** Echo request or reply: the identifier is both ports, so request and reply are one connection. */
  Echo = 1,
  /** An error (destination unreachable, time exceeded, …): `inner` holds the packet it quotes. */
  Error = 2,
  /** Any other ICMP message (router advertisement, neighbour discovery, …). */
  Other = 3,
}

/** TCP flags (RFC 9293 section 3.1). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

/** One packet's connection, filled in place by {@link parseTuple}. */
export class Tuple {
  /** 4 or 6. */
  family = 0;
  /** The transport protocol (the last IPv6 next header); IPPROTO_ICMP also for ICMPv6's 58. */
  proto = 0;
  /** Source and destination address as four big-endian 32-bit words; IPv4 in the first word, the rest 0. */
  readonly src = new Uint32Array(4);
  readonly dst = new Uint32Array(4);
  srcPort = 0;
  dstPort = 0;
  fragment: Fragment = Fragment.None;
  /** The fragment identification (IPv4 16 bits, IPv6 32 bits), when `fragment` is not None. */
  fragId = 0;
  /** TCP flags, 0 for other protocols and quoted packets. */
  tcpFlags = 0;
  icmp: IcmpKind = IcmpKind.None;
  icmpType = 0;
  icmpCode = 0;
  /** For an ICMP error, the packet it quotes (as its sender sent it); filled by parseTuple. */
  readonly inner: Tuple | null;

  constructor(withInner = true) {
    this.inner = withInner ? new Tuple(false) : null;
  }
}

/** ICMPv4 types that are errors quoting a packet (RFC 792; 4 source quench, 5 redirect, 12 parameter problem). */
function icmp4IsError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/** IPv6 extension headers walked through to the transport header (RFC 8200 section 4; AH, RFC 4302). */
const HOP_BY_HOP = 0, ROUTING = 43, FRAGMENT = 44, AH = 51, DEST_OPTS = 60;
/** More extension headers than this is not a packet worth reading (RFC 8200 recommends each appear once). */
const MAX_EXTENSION_HEADERS = 8;

/**
 * Reads the connection of the IP packet at `buf[off, off+len)` into `t`. Returns false for a packet too short
 * or malformed to say (bad version, header length beyond the packet, a transport header cut short in a whole
 * datagram or first fragment, an ICMP error whose quoted packet cannot be read). The IPv4 total length and the
 * IPv6 payload length bound the packet when they are shorter than `len`.
 *
 * Quoted packets (`quoted`) are cut short by nature: their length fields describe the original, only 8 bytes of
 * transport header are guaranteed (RFC 792), and TCP flags are not read.
 */
export function parseTuple(t: Tuple, buf: Uint8Array, off: number, len: number, quoted = false): boolean {
  if (off < 0 || len < 1 || off + len > buf.length) return false;
  const version = buf[off]! >> 4;
  let end = off + len;
  let p: number; // the transport header
  let proto: number;
  t.fragment = Fragment.None;
  t.fragId = 0;
  t.tcpFlags = 0;
  t.icmp = IcmpKind.None;
  t.icmpType = t.icmpCode = 0;
  t.srcPort = t.dstPort = 0;
  if (version === 4) {
    if (len < 20) return false;
    const ihl = (buf[off]! & 0x0f) * 4;
    if (ihl < 20 || ihl > len) return false;
    if (!quoted) {
      const total = (buf[off + 2]! << 8) | buf[off + 3]!;
      if (total < ihl) return false;
      if (total < len) end = off + total;
    }
    t.family = 4;
    proto = buf[off + 9]!;
    t.src[0] = word(buf, off + 12);
    t.dst[0] = word(buf, off + 16);
    t.src[1] =
      t.src[2] =
      t.src[3] =
      t.dst[1] =
      t.dst[2] =
      t.dst[3] =
        0;
    const frag = (buf[off + 6]! << 8) | buf[off + 7]!;
    if ((frag & 0x3fff) !== 0) {
      t.fragId = (buf[off + 4]! << 8) | buf[off + 5]!;
      t.fragment = (frag & 0x1fff) !== 0 ? Fragment.Later : Fragment.First;
    }
    p = off + ihl;
  } else if (version === 6) {
    if (len < 40) return false;
    if (!quoted) {
      const total = 40 + ((buf[off + 4]! << 8) | buf[off + 5]!);
      if (total < len) end = off + total;
    }
    t.family = 6;
    for (let i = 0; i < 4; i++) {
      t.src[i] = word(buf, off + 8 + 4 * i);
      t.dst[i] = word(buf, off + 24 + 4 * i);
    }
    proto = buf[off + 6]!;
    p = off + 40;
    for (let n = 0;; n++) {
      if (
        proto !== HOP_BY_HOP && proto !== ROUTING && proto !== DEST_OPTS && proto !== FRAGMENT && proto !== AH
      ) {
        break;
      }
      if (n === MAX_EXTENSION_HEADERS || p + 8 > end) return false;
      const next = buf[p]!;
      if (proto === FRAGMENT) {
        const fo = (buf[p + 2]! << 8) | buf[p + 3]!;
        // An atomic fragment (offset 0, no more) is a whole datagram (RFC 8200 section 4.5, RFC 6946).
        if ((fo & 0xfff9) !== 0) {
          t.fragId = word(buf, p + 4);
          t.fragment = (fo & 0xfff8) !== 0 ? Fragment.Later : Fragment.First;
        }
        p += 8;
      } else {
        const size = proto === AH ? (buf[p + 1]! + 2) * 4 : (buf[p + 1]! + 1) * 8;
        p += size;
      }
      proto = next;
      if (t.fragment === Fragment.Later) break; // what follows is the middle of a datagram
    }
    if (p > end) return false;
  } else {
    return false;
  }
  t.proto = proto === IPPROTO_ICMPV6 ? IPPROTO_ICMP : proto;
  if (t.fragment === Fragment.Later) return true;
  const have = end - p;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    // A first fragment (and a whole datagram) must carry the whole transport header: a "tiny fragment" that
    // leaves the ports or flags to a later one is how filters were evaded (RFC 1858 section 3).
    if (have < (quoted ? 4 : proto === IPPROTO_TCP ? 20 : 8)) return false;
    t.srcPort = (buf[p]! << 8) | buf[p + 1]!;
    t.dstPort = (buf[p + 2]! << 8) | buf[p + 3]!;
    if (proto === IPPROTO_TCP && !quoted) t.tcpFlags = buf[p + 13]! & 0x3f;
    return true;
  }
  if ((proto === IPPROTO_ICMP && t.family === 4) || (proto === IPPROTO_ICMPV6 && t.family === 6)) {
    if (have < (quoted ? 4 : 8)) return false;
    const type = buf[p]!;
    t.icmpType = type;
    t.icmpCode = buf[p + 1]!;
    const echo = t.family === 4 ? type === 8 || type === 0 : type === 128 || type === 129;
    if (echo) {
      t.icmp = IcmpKind.Echo;
      if (have >= 6) t.srcPort = t.dstPort = (buf[p + 4]! << 8) | buf[p + 5]!;
      return quoted || have >= 8;
    }
    const error = t.family === 4 ? icmp4IsError(type) : type < 128;
    if (!error || quoted) {
      t.icmp = error ? IcmpKind.Error : IcmpKind.Other;
      return true;
    }
    // An error quotes the offending packet after its 8-byte header; it must be of the same family and be read
    // fully enough to name its connection, or the error cannot be related to one.
    t.icmp = IcmpKind.Error;
    const inner = t.inner;
    if (inner === null || t.fragment !== Fragment.None) return false;
    if (!parseTuple(inner, buf, p + 8, have - 8, true) || inner.family !== t.family) return false;
    return true;
  }
  return true; // another protocol: no ports
}

function word(b: Uint8Array, i: number): number {
  return ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
}

/** The words of a connection key: see {@link writeKey}. */
export const KEY_WORDS = 12;

/**
 * Writes the key of `t`'s connection to `key[0, KEY_WORDS)`, seen from this side of the tunnel: `local` is
 * our address and port, `remote` the peer's side, so a packet and its reply have the same key. `outbound` is a
 * packet leaving through the tunnel (its source is local). `peerId` keeps connections of two peers apart.
 * Layout: family and protocol, peer, local address (4 words), remote address (4), local and remote port.
 */
export function writeKey(t: Tuple, outbound: boolean, peerId: number, key: Uint32Array): void {
  key[0] = (t.family << 8) | t.proto;
  key[1] = peerId;
  const local = outbound ? t.src : t.dst;
  const remote = outbound ? t.dst : t.src;
  key[2] = local[0]!;
  key[3] = local[1]!;
  key[4] = local[2]!;
  key[5] = local[3]!;
  key[6] = remote[0]!;
  key[7] = remote[1]!;
  key[8] = remote[2]!;
  key[9] = remote[3]!;
  key[10] = outbound ? t.srcPort : t.dstPort;
  key[11] = outbound ? t.dstPort : t.srcPort;
}
