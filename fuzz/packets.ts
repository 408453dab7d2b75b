/**
 * IP packets for the fuzzer, built and checked the obvious way (RFC 1071 one byte pair at a time), so they do
 * not share code with what they test.
 * @module
 */

/** The folded one's complement sum of `b`, plus `initial`. */
export function naiveSum(b: ArrayLike<number>, initial = 0): number {
  let s = initial;
  for (let i = 0; i < b.length; i += 2) s += (b[i]! << 8) + (i + 1 < b.length ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function pseudoSum(pkt: Uint8Array, v6: boolean, proto: number, len: number): number {
  const addrs = v6 ? pkt.subarray(8, 40) : pkt.subarray(12, 20);
  return naiveSum(addrs, proto + (len & 0xffff) + (len >>> 16));
}

export interface TcpSpec {
  v6: boolean;
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  options: Uint8Array;
  payload: Uint8Array;
  id: number;
  ttl: number;
  tos: number;
  df: boolean;
}

/** A TCP segment with correct IPv4 header and TCP checksums. */
export function tcpPacket(s: TcpSpec): Uint8Array {
  const iph = s.v6 ? 40 : 20;
  const thl = 20 + s.options.length;
  const len = iph + thl + s.payload.length;
  const p = new Uint8Array(len);
  if (s.v6) {
    p[0] = 0x60 | (s.tos >>> 4);
    p[1] = (s.tos & 0x0f) << 4;
    p[4] = (len - 40) >>> 8;
    p[5] = len - 40;
    p[6] = 6;
    p[7] = s.ttl;
    p.set(s.src, 8);
    p.set(s.dst, 24);
  } else {
    p[0] = 0x45;
    p[1] = s.tos;
    p[2] = len >>> 8;
    p[3] = len;
    p[4] = s.id >>> 8;
    p[5] = s.id;
    p[6] = s.df ? 0x40 : 0;
    p[8] = s.ttl;
    p[9] = 6;
    p.set(s.src, 12);
    p.set(s.dst, 16);
  }
  const t = iph;
  p[t] = s.sport >>> 8;
  p[t + 1] = s.sport;
  p[t + 2] = s.dport >>> 8;
  p[t + 3] = s.dport;
  new DataView(p.buffer).setUint32(t + 4, s.seq >>> 0);
  new DataView(p.buffer).setUint32(t + 8, s.ack >>> 0);
  p[t + 12] = (thl / 4) << 4;
  p[t + 13] = s.flags;
  p[t + 14] = s.window >>> 8;
  p[t + 15] = s.window;
  p.set(s.options, t + 20);
  p.set(s.payload, t + thl);
  fixChecksums(p);
  return p;
}

/** Recomputes the IPv4 header checksum and the TCP checksum of a TCP packet (IPv6 without extensions). */
export function fixChecksums(p: Uint8Array): void {
  const v6 = p[0]! >>> 4 === 6;
  const iph = v6 ? 40 : (p[0]! & 15) * 4;
  if (!v6) {
    p[10] = p[11] = 0;
    const c = ~naiveSum(p.subarray(0, iph)) & 0xffff;
    p[10] = c >>> 8;
    p[11] = c;
  }
  if (p.length < iph + 20) return;
  p[iph + 16] = p[iph + 17] = 0;
  const c = ~naiveSum(p.subarray(iph), pseudoSum(p, v6, 6, p.length - iph)) & 0xffff;
  p[iph + 16] = c >>> 8;
  p[iph + 17] = c;
}

/** Whether the IPv4 header checksum verifies (true for anything that is not a whole IPv4 header). */
export function ipv4HeaderValid(p: Uint8Array): boolean {
  if (p.length < 20 || p[0]! >>> 4 !== 4) return true;
  const iph = (p[0]! & 15) * 4;
  return iph < 20 || iph > p.length || naiveSum(p.subarray(0, iph)) === 0xffff;
}

/** Whether the transport checksum from `start` verifies with the pseudo-header of `proto`. */
export function transportValid(p: Uint8Array, start: number, proto: number): boolean {
  const v6 = p[0]! >>> 4 === 6;
  return naiveSum(p.subarray(start), pseudoSum(p, v6, proto, p.length - start)) === 0xffff;
}
