/** Packets and an independent RFC 1071 reference shared by the checksum, GSO and GRO unit tests. */
import assert from "node:assert/strict";
import {
  type Segmenter,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../../lib/gso.ts";
import { seededRng } from "./_harness.ts";

// ---- An independent reference: RFC 1071 done the obvious way, and packets built with it. ----

/** The one's complement sum of `bytes`, folded, byte pairs read one at a time. */
export function naiveSum(bytes: ArrayLike<number>, initial = 0): number {
  let s = initial;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i]! << 8) + (i + 1 < bytes.length ? bytes[i + 1]! : 0);
  }
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

export function pseudo(v6: boolean, pkt: Uint8Array, proto: number, len: number): number {
  const addrs = v6 ? pkt.subarray(8, 40) : pkt.subarray(12, 20);
  return naiveSum([...addrs, 0, proto, (len >>> 8) & 0xff, len & 0xff, ...(v6 ? [0, 0] : [])]) +
    (v6 ? (len >>> 16) : 0);
}

/** True when the packet's IPv4 header checksum (if IPv4) and its TCP/UDP checksum verify. */
export function checksumsValid(pkt: Uint8Array): boolean {
  const v6 = pkt[0]! >>> 4 === 6;
  const iph = v6 ? 40 : (pkt[0]! & 15) * 4;
  if (!v6 && naiveSum(pkt.subarray(0, iph)) !== 0xffff) return false;
  const proto = v6 ? pkt[6]! : pkt[9]!;
  const l4 = pkt.subarray(iph);
  return naiveSum(l4, pseudo(v6, pkt, proto, l4.length)) === 0xffff;
}

export const rng = seededRng(0x0ff10ad);
export function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  rng(b);
  return b;
}

export interface TcpSpec {
  v6?: boolean;
  src?: number;
  sport?: number;
  dport?: number;
  seq: number;
  ack?: number;
  flags?: number;
  window?: number;
  options?: number[];
  payload: Uint8Array;
  id?: number;
  ttl?: number;
  tos?: number;
  df?: boolean;
  flowLabel?: number;
  ipOptions?: number[];
}

export const ACK = 0x10, PSH = 0x08, FIN = 0x01, SYN = 0x02, RST = 0x04, URG = 0x20, ECE = 0x40, CWR = 0x80;
/** A TCP timestamp option (kind 8) padded with two NOPs, as Linux sends it. */
export const TS = (val: number, ecr: number) => [
  1,
  1,
  8,
  10,
  val >>> 24,
  (val >>> 16) & 255,
  (val >>> 8) & 255,
  val & 255,
  ecr >>> 24,
  (ecr >>> 16) & 255,
  (ecr >>> 8) & 255,
  ecr & 255,
];

/** A complete TCP/IP packet with correct checksums. */
export function tcpPacket(s: TcpSpec): Uint8Array {
  const v6 = s.v6 ?? false;
  const ipOpts = s.ipOptions ?? [];
  const iph = v6 ? 40 : 20 + ipOpts.length;
  const opts = s.options ?? [];
  const thl = 20 + opts.length;
  const len = iph + thl + s.payload.length;
  const p = new Uint8Array(len);
  const v = new DataView(p.buffer);
  const src = s.src ?? 1;
  if (v6) {
    v.setUint32(0, (6 << 28) | ((s.tos ?? 0) << 20) | (s.flowLabel ?? 0));
    v.setUint16(4, len - 40);
    p[6] = 6;
    p[7] = s.ttl ?? 64;
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src], 8);
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99], 24);
  } else {
    p[0] = 0x40 | (iph / 4);
    p[1] = s.tos ?? 0;
    v.setUint16(2, len);
    v.setUint16(4, s.id ?? 0x1234);
    p[6] = (s.df ?? true) ? 0x40 : 0;
    p[8] = s.ttl ?? 64;
    p[9] = 6;
    p.set([10, 0, 0, src], 12);
    p.set([10, 0, 0, 99], 16);
    p.set(ipOpts, 20);
    v.setUint16(10, ~naiveSum(p.subarray(0, iph)) & 0xffff);
  }
  const t = iph;
  v.setUint16(t, s.sport ?? 40000);
  v.setUint16(t + 2, s.dport ?? 5201);
  v.setUint32(t + 4, s.seq >>> 0);
  v.setUint32(t + 8, s.ack ?? 777);
  p[t + 12] = (thl / 4) << 4;
  p[t + 13] = s.flags ?? ACK;
  v.setUint16(t + 14, s.window ?? 502);
  p.set(opts, t + 20);
  p.set(s.payload, t + thl);
  v.setUint16(t + 16, ~naiveSum(p.subarray(t), pseudo(v6, p, 6, len - t)) & 0xffff);
  return p;
}

/** A TSO super-packet as the TUN hands it over: vnet header, then the whole TCP packet. */
export function tsoRead(s: TcpSpec, gso: number, gsoType?: number, hdrLen?: number): Uint8Array {
  const pkt = tcpPacket(s);
  const v6 = s.v6 ?? false;
  const iph = v6 ? 40 : 20 + (s.ipOptions?.length ?? 0);
  // CHECKSUM_PARTIAL: the kernel leaves the pseudo-header sum in the field.
  const t = iph + 16;
  const ps = pseudo(v6, pkt, 6, pkt.length - iph);
  pkt[t] = ps >>> 8;
  pkt[t + 1] = ps & 255;
  const out = new Uint8Array(VNET_HDR_LEN + pkt.length);
  writeVnetHdr(
    out,
    0,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType ?? (v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4),
    hdrLen ?? iph + 20 + (s.options?.length ?? 0),
    gso,
    iph,
    16,
  );
  out.set(pkt, VNET_HDR_LEN);
  return out;
}

/** The packets the kernel would have sent had it segmented `s` itself. */
export function expectedSegments(s: TcpSpec, gso: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = Math.max(1, Math.ceil(s.payload.length / gso));
  for (let i = 0; i < n; i++) {
    let flags = s.flags ?? ACK;
    if (i !== n - 1) flags &= ~(FIN | PSH);
    if (i !== 0) flags &= ~CWR;
    out.push(tcpPacket({
      ...s,
      seq: (s.seq + i * gso) >>> 0,
      id: ((s.id ?? 0x1234) + i) & 0xffff,
      flags,
      payload: s.payload.subarray(i * gso, (i + 1) * gso),
    }));
  }
  return out;
}

export function segmentAll(seg: Segmenter, read: Uint8Array, off = 0, len = read.length - off): Uint8Array[] {
  const n = seg.begin(read, off, len);
  const out: Uint8Array[] = [];
  const dst = new Uint8Array(70000);
  for (let i = 0; i < n; i++) {
    const m = seg.segment(i, dst, 3);
    assert.equal(m, seg.length(i));
    out.push(dst.slice(3, 3 + m));
  }
  return out;
}

export function vnetFields(b: Uint8Array, o: number) {
  const le = (k: number) => b[o + k]! | (b[o + k + 1]! << 8);
  return {
    flags: b[o]!,
    gsoType: b[o + 1]!,
    hdrLen: le(2),
    gsoSize: le(4),
    csumStart: le(6),
    csumOffset: le(8),
  };
}
