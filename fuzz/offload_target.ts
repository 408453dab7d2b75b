/**
 * The TUN offloads (lib/gso.ts, lib/gro.ts). Two kinds of input, alternating:
 *
 * - a batch of packets (TCP flows that may merge, with perturbed and junk packets among them) through the
 *   Coalescer, each output back through the Segmenter: every input packet must come back byte for byte, in
 *   its flow's order (fields a merge may legitimately change are normalised first: see `normalise`);
 * - one random or mutated vnet header + super-packet through the Segmenter alone: no exception, and every
 *   segment it writes stays in its bounds and carries valid checksums.
 * @module
 */
import { Coalescer } from "../lib/gro.ts";
import {
  Segmenter,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../lib/gso.ts";
import { fixChecksums, ipv4HeaderValid, tcpPacket, type TcpSpec, transportValid } from "./packets.ts";
import type { Prng } from "./prng.ts";
import { check, hex, mutate, type Target } from "./target.ts";

const ACK = 0x10, PSH = 0x08;

export function offloadTarget(p: Prng): Target {
  const segmenter = new Segmenter();
  let input: Uint8Array = new Uint8Array(0);
  let merged = 0;

  /** A flow: fixed addresses, ports and options, a running sequence number and IP ID. */
  const flow = (): { spec: TcpSpec; mss: number } => {
    const v6 = p.chance(0.4);
    const opts = p.chance(0.5) ? new Uint8Array([1, 1, 8, 10, ...p.bytes(8)]) : new Uint8Array(0);
    return {
      spec: {
        v6,
        src: p.bytes(v6 ? 16 : 4),
        dst: p.bytes(v6 ? 16 : 4),
        sport: p.u32() & 0xffff,
        dport: p.u32() & 0xffff,
        seq: p.u32(),
        ack: p.u32(),
        flags: ACK,
        window: p.u32() & 0xffff,
        options: opts,
        payload: new Uint8Array(0),
        id: p.u32() & 0xffff,
        ttl: p.int(1, 255),
        tos: p.chance(0.8) ? 0 : p.u32() & 0xff,
        df: p.chance(0.7),
      },
      mss: p.pick([1, 7, 100, 536, 1200, 1448, p.int(1, 9000)]),
    };
  };

  const batch = (): Uint8Array[] => {
    const flows = Array.from({ length: p.int(1, 4) }, flow);
    const out: Uint8Array[] = [];
    const n = p.int(1, p.chance(0.1) ? 300 : 40);
    for (let i = 0; i < n; i++) {
      const f = p.pick(flows);
      const size = p.chance(0.8) ? f.mss : p.int(0, f.mss);
      const s = { ...f.spec, payload: p.bytes(size), flags: p.chance(0.1) ? ACK | PSH : ACK };
      if (p.chance(0.05)) s.flags = p.u32() & 0xff;
      let pkt = tcpPacket(s);
      f.spec.seq = (f.spec.seq + size) >>> 0;
      f.spec.id = (f.spec.id + 1) & 0xffff;
      const r = p.below(100);
      if (r < 5) pkt = mutate(p, pkt); // anything at all, checksums likely wrong
      else if (r < 10) {
        pkt = mutate(p, pkt);
        fixChecksums(pkt);
      } else if (r < 12) pkt = p.bytes(p.size(200));
      else if (r < 14) f.spec.seq = (f.spec.seq + p.int(-3, 3)) >>> 0; // a gap or an overlap next
      else if (r < 15) f.spec.id = p.u32() & 0xffff;
      // The device never delivers an empty packet (nor does a TUN write take one).
      out.push(pkt.length > 0 ? pkt : new Uint8Array(1));
    }
    return out;
  };

  const roundTrip = () => {
    const packets = batch();
    const total = packets.reduce((s, x) => s + x.length, 0);
    input = concat(packets);
    // Packets laid out at random alignments in one buffer; the arena sometimes in the same buffer after them.
    const sameBuffer = p.chance(0.3);
    const room = total + packets.length * (VNET_HDR_LEN + 4);
    const ab = new ArrayBuffer(room + (sameBuffer ? 4 * 65600 : 0));
    const all = new Uint8Array(ab, 0, room);
    const arena = sameBuffer
      ? new Uint8Array(ab, room)
      : p.chance(0.3)
      ? new Uint8Array(p.int(0, 2000))
      : undefined;
    const coalescer = new Coalescer(p.chance(0.5) ? 256 : p.int(1, 64), arena);
    coalescer.coalesce = p.chance(0.95);
    const got: Uint8Array[] = [];
    let pos = 0;
    const flushInto = () => {
      const outs = coalescer.flush();
      let segs = 0;
      for (let i = 0; i < outs; i++) {
        const buf = coalescer.outBuf(i), off = coalescer.outOff(i), len = coalescer.outLen(i);
        const n = segmenter.begin(buf, off, len);
        check(
          n === coalescer.outSegments(i),
          `output ${i} (${len} bytes) of ${coalescer.outSegments(i)} segments resegments into ${n}`,
        );
        if (n > 1) merged += n;
        for (let k = 0; k < n; k++) {
          const dst = new Uint8Array(segmenter.length(k) + 2);
          check(segmenter.segment(k, dst, 1) === dst.length - 2, "segment length differs from length()");
          got.push(dst.subarray(1, dst.length - 1));
        }
        segs += n;
      }
      return segs;
    };
    let added = 0, out = 0;
    for (const pkt of packets) {
      pos += VNET_HDR_LEN + p.below(4);
      all.set(pkt, pos);
      if (!coalescer.add(all, pos, pkt.length)) {
        out += flushInto();
        check(coalescer.add(all, pos, pkt.length), "add refused right after a flush");
      }
      added++;
      pos += pkt.length;
    }
    out += flushInto();
    check(out === added, `${added} packets in, ${out} out`);
    compareByFlow(packets, got);
  };

  const segmentOnly = () => {
    const len = VNET_HDR_LEN + p.size(p.chance(0.2) ? 66000 : 3000);
    if (p.chance(0.6)) {
      // A plausible super-packet, then perhaps damaged.
      const f = flow();
      const pkt = tcpPacket({ ...f.spec, payload: p.bytes(Math.min(len, 65000)), flags: p.u32() & 0xff });
      const gso = f.spec.v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
      const kind = p.chance(0.8) ? gso | (p.chance(0.1) ? VIRTIO_NET_HDR_GSO_ECN : 0) : p.below(256);
      const hdr = new Uint8Array(VNET_HDR_LEN);
      const iph = f.spec.v6 ? 40 : 20;
      writeVnetHdr(hdr, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, kind, iph + 20, p.int(0, 2000), iph, 16);
      if (p.chance(0.3)) {
        writeVnetHdr(hdr, 0, p.below(4), VIRTIO_NET_HDR_GSO_NONE, 0, 0, p.below(200), p.below(80));
      }
      let whole = concat([hdr, pkt]);
      if (p.chance(0.3)) whole = mutate(p, whole);
      input = whole.subarray(0, Math.min(whole.length, len));
    } else {
      input = p.bytes(p.size(200));
    }
    const off = p.below(8);
    const buf = new Uint8Array(off + input.length + p.below(8));
    buf.set(input, off);
    const n = segmenter.begin(buf, off, input.length);
    check(n >= 0 && n <= 65535, `begin returned ${n}`);
    const gsoType = input.length > 1 ? input[1]! : 0;
    for (let k = 0; k < Math.min(n, 64); k++) {
      const i = p.chance(0.5) ? k : p.below(n);
      const want = segmenter.length(i);
      check(want > 0 && want <= 65535, `segment ${i} length ${want}`);
      const dst = new Uint8Array(want + 8).fill(0xa5);
      const at = p.below(5);
      check(segmenter.segment(i, dst, at) === want, "segment() and length() disagree");
      for (let j = 0; j < dst.length; j++) {
        if (j < at || j >= at + want) {
          check(dst[j] === 0xa5, `segment ${i} wrote outside its bounds at ${j - at}`);
        }
      }
      const seg = dst.subarray(at, at + want);
      if (gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
        const v6 = seg[0]! >>> 4 === 6;
        check(ipv4HeaderValid(seg), `segment ${i}: bad IPv4 header checksum`);
        const iph = v6 ? transportStart6(seg) : (seg[0]! & 15) * 4;
        check(transportValid(seg, iph, 6), `segment ${i}: bad TCP checksum`);
      } else if ((input[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
        // skb_checksum_help: the field held a partial sum (the pseudo-header's); with it, the completed
        // checksum makes everything from csum_start sum to all ones. (When the field sits at an even offset
        // from csum_start, as every real one does.)
        const start = input[6]! | (input[7]! << 8), at = input[8]! | (input[9]! << 8);
        const held = (input[VNET_HDR_LEN + start + at]! << 8) | input[VNET_HDR_LEN + start + at + 1]!;
        if (at % 2 === 0) check(sumFrom(seg, start, held) === 0xffff, "completed checksum does not verify");
      }
    }
    check(
      segmenter.length(n) === 0 && segmenter.segment(n, new Uint8Array(70000), 0) === 0,
      "segment past count",
    );
  };

  return {
    get input() {
      return input;
    },
    step() {
      if (p.chance(0.5)) roundTrip();
      else segmentOnly();
    },
    stats: () => ({ merged }),
  };
}

/** Where TCP starts after IPv6 extension headers the segmenter accepted (hop-by-hop, dest. options, routing). */
function transportStart6(p: Uint8Array): number {
  let next = p[6]!, at = 40;
  while (next !== 6 && at + 8 <= p.length) {
    next = p[at]!;
    at += (p[at + 1]! + 1) * 8;
  }
  return at;
}

function sumFrom(p: Uint8Array, start: number, initial: number): number {
  let s = initial;
  for (let i = start; i < p.length; i += 2) s += (p[i]! << 8) + (i + 1 < p.length ? p[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function concat(xs: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(xs.reduce((s, x) => s + x.length, 0));
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

/**
 * The flow a packet belongs to as far as merging goes (version, addresses, ports), or a key of its own when it
 * is no TCP segment GRO looks at: IPv4 fragments, IPv6 extension headers, headers that do not fit. Like the
 * kernel's GRO, which hands those up at once while it holds the flow's segments, the coalescer may order them
 * differently from the flow's segments; every flow's segments must come back in order.
 */
function flowKey(pkt: Uint8Array, i: number): string {
  const v = pkt.length > 0 ? pkt[0]! >>> 4 : 0;
  let iph = 0;
  if (pkt.length >= 40 && v === 4 && pkt[9] === 6 && ((pkt[6]! & 0x3f) | pkt[7]!) === 0) {
    iph = (pkt[0]! & 15) * 4;
  } else if (pkt.length >= 60 && v === 6 && pkt[6] === 6) iph = 40;
  const thl = iph >= 20 && iph + 20 <= pkt.length ? (pkt[iph + 12]! >>> 4) * 4 : 0;
  if (thl < 20 || iph + thl > pkt.length) return `single ${i}`;
  return `${v} ${hex(pkt.subarray(v === 4 ? 12 : 8, v === 4 ? 20 : 40))} ${hex(pkt.subarray(iph, iph + 4))}`;
}

/**
 * The bytes to compare: a merge legitimately rewrites what the packet did not really carry. A wrong checksum
 * in the packet sent (`ref`) comes back right (the coalescer does not verify, as the kernel does not for
 * authenticated packets); the IPv4 ID of a DF packet and the urgent pointer without URG have no meaning
 * (RFC 6864, RFC 9293), and GRO, like the kernel's, does not compare them.
 */
function normalise(pkt: Uint8Array, ref: Uint8Array, other: Uint8Array): Uint8Array {
  const c = pkt.slice();
  const v = ref.length > 0 ? ref[0]! >>> 4 : 0;
  const iph = v === 4 ? (ref[0]! & 15) * 4 : 40;
  const tcp = (v === 4 && ref.length >= 20 && ref[9] === 6) || (v === 6 && ref.length >= 40 && ref[6] === 6);
  if (!tcp || iph < 20 || ref.length < iph + 20 || c.length < iph + 20 || other.length < iph + 20) return c;
  if (!transportValid(ref, iph, 6)) c[iph + 16] = c[iph + 17] = 0;
  if (v === 4 && !ipv4HeaderValid(ref)) c[10] = c[11] = 0;
  if (v === 4 && (ref[6]! & 0x40) !== 0) {
    c[4] =
      c[5] =
      c[10] =
      c[11] =
        0;
  }
  if (
    (ref[iph + 13]! & 0x20) === 0 &&
    (pkt[iph + 18]! | pkt[iph + 19]! | other[iph + 18]! | other[iph + 19]!) !== 0
  ) {
    c[iph + 18] =
      c[iph + 19] =
      c[iph + 16] =
      c[iph + 17] =
        0; // and the checksum that covered it
  }
  return c;
}

/** Where two byte strings first differ, with a few bytes of each from there; null when equal. */
function difference(a: Uint8Array, b: Uint8Array): string | null {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (i === a.length && i === b.length) return null;
  return `lengths ${a.length} and ${b.length}, first difference at byte ${i}: ` +
    `${hex(a.subarray(i, i + 12))} vs ${hex(b.subarray(i, i + 12))}`;
}

function compareByFlow(sent: Uint8Array[], got: Uint8Array[]): void {
  const byFlow = (xs: Uint8Array[]) => {
    const m = new Map<string, Uint8Array[]>();
    xs.forEach((x, i) => {
      const k = flowKey(x, i);
      m.set(k, [...(m.get(k) ?? []), x]);
    });
    return m;
  };
  const a = byFlow(sent);
  const b = byFlow(got);
  // Packets of no flow keep no order among the others: match them by content.
  const singles = (m: Map<string, Uint8Array[]>) =>
    [...m].filter(([k]) => k.startsWith("single")).flatMap(([, v]) => v.map(hex)).sort().join();
  check(singles(a) === singles(b), "packets of no flow came back changed");
  for (const [k, list] of a) {
    if (k.startsWith("single")) continue;
    const back = b.get(k) ?? [];
    check(back.length === list.length, () => `flow ${k}: ${list.length} packets sent, ${back.length} back`);
    list.forEach((x, i) => {
      const d = difference(normalise(x, x, back[i]!), normalise(back[i]!, x, x));
      check(d === null, () => `flow ${k}: packet ${i} of ${list.length} came back changed: ${d}`);
    });
  }
}
