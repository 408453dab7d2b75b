/**
 * IP packets for the tuple, statistics and filter tests: TCP, UDP and ICMP over IPv4 and IPv6, fragments and
 * ICMP errors quoting another packet. Checksums are left zero: nothing here verifies them.
 */
import { parseAddress } from "../../lib/ip.ts";

export interface PacketOptions {
  /** TCP flags (default SYN). */
  flags?: number;
  /** IPv4: fragment offset in 8-byte units and the more-fragments flag; IPv6 adds a fragment header. */
  fragOffset?: number;
  moreFragments?: boolean;
  fragId?: number;
  /** Bytes of payload after the transport header. */
  payload?: number;
}

const TCP = 6, UDP = 17;

function addr(a: string): Uint8Array {
  const b = parseAddress(a);
  if (!b) throw new Error(`bad address ${a}`);
  return b;
}

/** An IP packet of `proto` carrying `transport` (already built), fragment fields from `o`. */
export function ipPacket(
  src: string,
  dst: string,
  proto: number,
  transport: Uint8Array,
  o: PacketOptions = {},
) {
  const s = addr(src), d = addr(dst);
  const frag = o.fragOffset !== undefined || o.moreFragments;
  if (s.length === 4) {
    const p = new Uint8Array(20 + transport.length);
    p[0] = 0x45;
    p[2] = p.length >> 8;
    p[3] = p.length & 0xff;
    p[4] = ((o.fragId ?? 0) >> 8) & 0xff;
    p[5] = (o.fragId ?? 0) & 0xff;
    const fo = (o.fragOffset ?? 0) | (o.moreFragments ? 0x2000 : 0);
    p[6] = fo >> 8;
    p[7] = fo & 0xff;
    p[8] = 64;
    p[9] = proto;
    p.set(s, 12);
    p.set(d, 16);
    p.set(transport, 20);
    return p;
  }
  const ext = frag ? 8 : 0;
  const p = new Uint8Array(40 + ext + transport.length);
  p[0] = 0x60;
  const plen = ext + transport.length;
  p[4] = plen >> 8;
  p[5] = plen & 0xff;
  p[6] = frag ? 44 : proto;
  p[7] = 64;
  p.set(s, 8);
  p.set(d, 24);
  if (frag) {
    p[40] = proto;
    const fo = ((o.fragOffset ?? 0) << 3) | (o.moreFragments ? 1 : 0);
    p[42] = fo >> 8;
    p[43] = fo & 0xff;
    new DataView(p.buffer).setUint32(44, o.fragId ?? 0);
  }
  p.set(transport, 40 + ext);
  return p;
}

export function tcp(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  o: PacketOptions = {},
): Uint8Array {
  const t = new Uint8Array(20 + (o.payload ?? 0));
  t[0] = sport >> 8;
  t[1] = sport & 0xff;
  t[2] = dport >> 8;
  t[3] = dport & 0xff;
  t[12] = 5 << 4;
  t[13] = o.flags ?? 0x02;
  return ipPacket(src, dst, TCP, t, o);
}

export function udp(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  o: PacketOptions = {},
): Uint8Array {
  const t = new Uint8Array(8 + (o.payload ?? 0));
  t[0] = sport >> 8;
  t[1] = sport & 0xff;
  t[2] = dport >> 8;
  t[3] = dport & 0xff;
  t[4] = t.length >> 8;
  t[5] = t.length & 0xff;
  return ipPacket(src, dst, UDP, t, o);
}

/** An ICMP (IPv4) or ICMPv6 message of `type`/`code`; `id` goes where an echo's identifier is. */
export function icmp(
  src: string,
  dst: string,
  type: number,
  code: number,
  id = 0,
  body: Uint8Array = new Uint8Array(0),
) {
  const t = new Uint8Array(8 + body.length);
  t[0] = type;
  t[1] = code;
  t[4] = id >> 8;
  t[5] = id & 0xff;
  t.set(body, 8);
  return ipPacket(src, dst, src.includes(":") ? 58 : 1, t);
}

/** An echo request (IPv4 type 8, IPv6 128) or reply (0, 129). */
export function echo(src: string, dst: string, id: number, reply = false): Uint8Array {
  const v6 = src.includes(":");
  return icmp(src, dst, reply ? (v6 ? 129 : 0) : (v6 ? 128 : 8), 0, id, new Uint8Array(16));
}

/** An ICMP error from `src` quoting the first 28 (IPv4) or 48+ (IPv6) bytes of `quoted` (RFC 792 / 4443). */
export function icmpError(src: string, dst: string, quoted: Uint8Array, type?: number, code = 3): Uint8Array {
  const v6 = src.includes(":");
  const body = quoted.subarray(0, Math.min(quoted.length, v6 ? 1232 : 28));
  return icmp(src, dst, type ?? (v6 ? 1 : 3), v6 ? 4 : code, 0, body);
}
