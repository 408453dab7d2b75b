import assert from "node:assert/strict";
import {
  Coalescer,
  copyBytes,
  csumFold,
  csumPartial,
  pseudoHeaderSum4,
  pseudoHeaderSum6,
  Segmenter,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../../lib/offload.ts";
import { seededRng } from "./_harness.ts";

// ---- An independent reference: RFC 1071 done the obvious way, and packets built with it. ----

/** The one's complement sum of `bytes`, folded, byte pairs read one at a time. */
function naiveSum(bytes: ArrayLike<number>, initial = 0): number {
  let s = initial;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i]! << 8) + (i + 1 < bytes.length ? bytes[i + 1]! : 0);
  }
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function pseudo(v6: boolean, pkt: Uint8Array, proto: number, len: number): number {
  const addrs = v6 ? pkt.subarray(8, 40) : pkt.subarray(12, 20);
  return naiveSum([...addrs, 0, proto, (len >>> 8) & 0xff, len & 0xff, ...(v6 ? [0, 0] : [])]) +
    (v6 ? (len >>> 16) : 0);
}

/** True when the packet's IPv4 header checksum (if IPv4) and its TCP/UDP checksum verify. */
function checksumsValid(pkt: Uint8Array): boolean {
  const v6 = pkt[0]! >>> 4 === 6;
  const iph = v6 ? 40 : (pkt[0]! & 15) * 4;
  if (!v6 && naiveSum(pkt.subarray(0, iph)) !== 0xffff) return false;
  const proto = v6 ? pkt[6]! : pkt[9]!;
  const l4 = pkt.subarray(iph);
  return naiveSum(l4, pseudo(v6, pkt, proto, l4.length)) === 0xffff;
}

const rng = seededRng(0x0ff10ad);
function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  rng(b);
  return b;
}

interface TcpSpec {
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

const ACK = 0x10, PSH = 0x08, FIN = 0x01, SYN = 0x02, RST = 0x04, URG = 0x20, ECE = 0x40, CWR = 0x80;
/** A TCP timestamp option (kind 8) padded with two NOPs, as Linux sends it. */
const TS = (val: number, ecr: number) => [
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
function tcpPacket(s: TcpSpec): Uint8Array {
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
function tsoRead(s: TcpSpec, gso: number, gsoType?: number, hdrLen?: number): Uint8Array {
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
function expectedSegments(s: TcpSpec, gso: number): Uint8Array[] {
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

function segmentAll(seg: Segmenter, read: Uint8Array, off = 0, len = read.length - off): Uint8Array[] {
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

function vnetFields(b: Uint8Array, o: number) {
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

// ---- Checksum and copy helpers ----

Deno.test("csumPartial agrees with a naive RFC 1071 sum at every alignment and length", () => {
  const block = randomBytes(70000);
  for (const viewOffset of [0, 1, 2, 3, 5]) {
    const buf = new Uint8Array(block.buffer, viewOffset, 69000);
    for (const off of [0, 1, 2, 3, 6, 7]) {
      for (const len of [0, 1, 2, 3, 4, 5, 7, 8, 9, 20, 31, 40, 1400, 1401, 65535]) {
        const initial = (off * 7919 + len) & 0xffff;
        const want = naiveSum(buf.subarray(off, off + len), initial);
        // 0 and 0xffff are the same number in one's complement (+0 and -0); fold both to compare.
        const got = csumPartial(buf, off, len, initial);
        assert.equal(got % 0xffff, want % 0xffff, `view+${viewOffset} off ${off} len ${len}`);
      }
    }
  }
  // RFC 1071 section 3's worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
  assert.equal(csumPartial(Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7), 0, 8, 0), 0xddf2);
  assert.equal(csumFold(0xddf2), 0x220d);
});

Deno.test("pseudo-header sums match the naive ones (IPv4 and IPv6)", () => {
  const p4 = tcpPacket({ seq: 1, payload: randomBytes(10) });
  assert.equal(pseudoHeaderSum4(p4, 0, 6, 1234), naiveSum([], pseudo(false, p4, 6, 1234)));
  const p6 = tcpPacket({ v6: true, seq: 1, payload: randomBytes(10) });
  assert.equal(pseudoHeaderSum6(p6, 0, 6, 70000), naiveSum([], pseudo(true, p6, 6, 70000)));
});

Deno.test("copyBytes copies across buffers at any alignment and within one buffer like memmove", () => {
  const src = randomBytes(5000);
  for (const so of [0, 1, 2, 3]) {
    for (const d of [0, 1, 2, 3]) {
      for (const n of [0, 1, 3, 4, 5, 17, 1400, 4000]) {
        const dst = new Uint8Array(4100);
        copyBytes(src, so, dst, d, n);
        assert.deepEqual(dst.subarray(d, d + n), src.subarray(so, so + n));
        assert.ok(dst.subarray(0, d).every((x) => x === 0) && dst.subarray(d + n).every((x) => x === 0));
      }
    }
  }
  // The last bytes of a buffer whose length is not a multiple of 4 (no whole word to read past them).
  const odd = randomBytes(4099);
  const dst = new Uint8Array(4100);
  copyBytes(odd, 1, dst, 0, 4098);
  assert.deepEqual(dst.subarray(0, 4098), odd.subarray(1));
  // Overlapping ranges of one buffer, through views that do not contain each other.
  for (const [a, b] of [[10, 13], [13, 10]]) {
    const block = randomBytes(3000);
    const ref = block.slice();
    const srcView = block.subarray(a, a + 2000);
    const dstView = block.subarray(b, b + 2000);
    copyBytes(srcView, 0, dstView, 0, 2000);
    assert.deepEqual(block.subarray(b, b + 2000), ref.subarray(a, a + 2000));
  }
  const whole = randomBytes(3000);
  const ref = whole.slice();
  copyBytes(whole.subarray(0, 1000), 5, whole.subarray(2000), 7, 900);
  assert.deepEqual(whole.subarray(2007, 2907), ref.subarray(5, 905));
});

// ---- Segmenter ----

Deno.test("Segmenter splits an IPv4 TSO super-packet as tcp_gso_segment does", () => {
  const seg = new Segmenter();
  const cases: [string, TcpSpec, number][] = [
    ["timestamps, PSH|FIN|CWR, ID and seq wrapping", {
      seq: 0xffffff00,
      id: 0xfffe,
      flags: ACK | PSH | FIN | CWR,
      options: TS(123456, 654321),
      payload: randomBytes(5 * 1448 + 300),
    }, 1448],
    ["no options, an exact multiple of gso_size", { seq: 1000, payload: randomBytes(4 * 1000) }, 1000],
    ["IP options, odd gso_size", { seq: 5, ipOptions: [1, 1, 1, 0], payload: randomBytes(3001) }, 999],
    ["a payload of at most gso_size: one packet", { seq: 5, payload: randomBytes(500) }, 1448],
    ["no payload at all", { seq: 5, flags: ACK | FIN, payload: new Uint8Array(0) }, 1448],
    ["up to 64 KiB", { seq: 77, options: TS(1, 2), payload: randomBytes(65535 - 52) }, 1368],
  ];
  for (const [what, spec, gso] of cases) {
    const read = tsoRead(spec, gso);
    const want = expectedSegments(spec, gso);
    const got = segmentAll(seg, read);
    assert.equal(got.length, want.length, what);
    assert.equal(seg.gsoSize, gso);
    for (let i = 0; i < want.length; i++) {
      assert.ok(checksumsValid(got[i]!), `${what}: segment ${i} checksums`);
      assert.deepEqual(got[i], want[i], `${what}: segment ${i}`);
    }
  }
});

Deno.test("Segmenter splits IPv6 TSO super-packets, with the ECN bit and extension headers", () => {
  const seg = new Segmenter();
  const spec: TcpSpec = {
    v6: true,
    seq: 42,
    flags: ACK | PSH | CWR,
    tos: 0x02,
    flowLabel: 0xabcde,
    options: TS(9, 8),
    payload: randomBytes(7 * 1348 + 1),
  };
  const want = expectedSegments(spec, 1348);
  const read = tsoRead(spec, 1348, VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN, 1);
  const got = segmentAll(seg, read);
  assert.equal(got.length, 8);
  for (let i = 0; i < 8; i++) {
    assert.ok(checksumsValid(got[i]!));
    assert.deepEqual(got[i], want[i], `segment ${i}`);
    assert.equal(got[i]![53]! & CWR, i === 0 ? CWR : 0);
  }
  // A hop-by-hop options header (8 bytes: next header TCP, PadN) is kept in every segment.
  const pkt = tcpPacket({ ...spec, flags: ACK });
  const withHbh = new Uint8Array(pkt.length + 8);
  withHbh.set(pkt.subarray(0, 40));
  withHbh[6] = 0; // hop-by-hop
  withHbh.set([6, 0, 1, 4, 0, 0, 0, 0], 40);
  withHbh.set(pkt.subarray(40), 48);
  new DataView(withHbh.buffer).setUint16(4, pkt.length - 40 + 8);
  const read2 = new Uint8Array(VNET_HDR_LEN + withHbh.length);
  writeVnetHdr(read2, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 80, 1348, 48, 16);
  read2.set(withHbh, VNET_HDR_LEN);
  const got2 = segmentAll(seg, read2);
  assert.equal(got2.length, 8);
  const wantPlain = expectedSegments({ ...spec, flags: ACK }, 1348);
  for (let i = 0; i < 8; i++) {
    const g = got2[i]!;
    assert.deepEqual([...g.subarray(40, 48)], [6, 0, 1, 4, 0, 0, 0, 0]);
    assert.equal(new DataView(g.buffer, g.byteOffset).getUint16(4), g.length - 40);
    // Without the extension header it is the plain segment (the pseudo-header does not include it).
    const plain = new Uint8Array(g.length - 8);
    plain.set(g.subarray(0, 40));
    plain.set(g.subarray(48), 40);
    plain[6] = 6;
    new DataView(plain.buffer).setUint16(4, plain.length - 40);
    assert.deepEqual(plain, wantPlain[i], `segment ${i} with hop-by-hop`);
  }
  // A routing header with segments left changes the pseudo-header: refused.
  read2[VNET_HDR_LEN + 6] = 43;
  read2[VNET_HDR_LEN + 40 + 3] = 1;
  assert.equal(seg.begin(read2, 0, read2.length), 0);
});

Deno.test("Segmenter works in place, at an offset, and in any segment order", () => {
  const seg = new Segmenter();
  const spec: TcpSpec = { seq: 7, flags: ACK | PSH, options: TS(3, 4), payload: randomBytes(3 * 1400 + 10) };
  const want = expectedSegments(spec, 1400);
  const read = tsoRead(spec, 1400);
  // The read lands at offset 6 of a slot block; segment 0 stays where it is, the others go to later slots.
  const SLOT = 1600;
  const block = new Uint8Array(SLOT * 8);
  block.set(read.subarray(0, VNET_HDR_LEN + want[0]!.length + 3 * 1400 + 10), SLOT * 2 + 6);
  const slot = (k: number) => block.subarray(k * SLOT, (k + 1) * SLOT);
  const big = new Uint8Array(70000);
  big.set(read, 6);
  assert.equal(seg.begin(big, 6, read.length), 4);
  for (const i of [3, 1, 0, 2]) assert.equal(seg.segment(i, slot(4 + i), 16), want[i]!.length);
  for (let i = 0; i < 4; i++) assert.deepEqual(slot(4 + i).subarray(16, 16 + want[i]!.length), want[i]);
  // In place: segment 0 first overwrites the source headers; later segments must not care.
  assert.equal(seg.begin(big, 6, read.length), 4);
  assert.equal(seg.segment(0, big, 16), want[0]!.length);
  assert.deepEqual(big.subarray(16, 16 + want[0]!.length), want[0]);
  for (let i = 1; i < 4; i++) {
    assert.equal(seg.segment(i, slot(i), 16), want[i]!.length);
    assert.deepEqual(slot(i).subarray(16, 16 + want[i]!.length), want[i], `segment ${i} after in-place 0`);
  }
  // A destination too short, or an index out of range, gives 0.
  assert.equal(seg.segment(1, new Uint8Array(100), 0), 0);
  assert.equal(seg.segment(4, big, 0), 0);
  assert.equal(seg.segment(-1, big, 0), 0);
});

Deno.test("a single packet with NEEDS_CSUM gets its TCP or UDP checksum completed", () => {
  const seg = new Segmenter();
  for (const v6 of [false, true]) {
    const iph = v6 ? 40 : 20;
    // TCP: the kernel left the pseudo-header sum in the field.
    const tcp = tcpPacket({ v6, seq: 9, flags: ACK | PSH, options: TS(1, 1), payload: randomBytes(777) });
    const partial = tcp.slice();
    const ps = pseudo(v6, tcp, 6, tcp.length - iph);
    partial[iph + 16] = ps >>> 8;
    partial[iph + 17] = ps & 255;
    const read = new Uint8Array(VNET_HDR_LEN + tcp.length + 5);
    writeVnetHdr(read, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, iph, 16);
    read.set(partial, VNET_HDR_LEN);
    assert.deepEqual(segmentAll(seg, read, 0, VNET_HDR_LEN + tcp.length), [tcp]);
    // In place.
    assert.equal(seg.begin(read, 0, VNET_HDR_LEN + tcp.length), 1);
    assert.equal(seg.segment(0, read, VNET_HDR_LEN), tcp.length);
    assert.deepEqual(read.subarray(VNET_HDR_LEN, VNET_HDR_LEN + tcp.length), tcp);

    // UDP, with the two last payload bytes chosen so the checksum computes to 0: it must be sent as 0xffff.
    const payload = randomBytes(101);
    const udp = new Uint8Array(iph + 8 + payload.length);
    const v = new DataView(udp.buffer);
    udp.set(tcp.subarray(0, iph));
    if (v6) {
      udp[6] = 17;
      v.setUint16(4, 8 + payload.length);
    } else {
      udp[9] = 17;
      v.setUint16(2, udp.length);
      v.setUint16(10, 0);
      v.setUint16(10, ~naiveSum(udp.subarray(0, 20)) & 0xffff);
    }
    v.setUint16(iph, 5353);
    v.setUint16(iph + 2, 53);
    v.setUint16(iph + 4, 8 + payload.length);
    udp.set(payload, iph + 8);
    const ups = pseudo(v6, udp, 17, 8 + payload.length);
    for (const zero of [false, true]) {
      if (zero) {
        // Make the segment's sum 0xffff: its checksum is then 0.
        udp[iph + 8] = 0;
        udp[iph + 9] = 0;
        const s = naiveSum(udp.subarray(iph), ups);
        const w = 0xffff - s;
        udp[iph + 8] = w >>> 8;
        udp[iph + 9] = w & 255;
      }
      const r = new Uint8Array(VNET_HDR_LEN + udp.length);
      writeVnetHdr(r, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, iph, 6);
      r.set(udp, VNET_HDR_LEN);
      r[VNET_HDR_LEN + iph + 6] = ups >>> 8;
      r[VNET_HDR_LEN + iph + 7] = ups & 255;
      const [got] = segmentAll(seg, r);
      assert.ok(checksumsValid(got!), `UDP v${v6 ? 6 : 4} zero=${zero}`);
      const c = new DataView(got!.buffer).getUint16(iph + 6);
      if (zero) assert.equal(c, 0xffff, "a computed 0 is sent as 0xffff");
      else assert.notEqual(c, 0);
    }
  }
});

Deno.test("a packet without offload flags is copied as it is", () => {
  const seg = new Segmenter();
  const pkt = randomBytes(1000);
  pkt[0] = 0x45;
  const read = new Uint8Array(VNET_HDR_LEN + pkt.length);
  read.set(pkt, VNET_HDR_LEN);
  assert.deepEqual(segmentAll(seg, read), [pkt]);
  assert.equal(seg.gsoType, VIRTIO_NET_HDR_GSO_NONE);
  assert.equal(seg.gsoSize, 0);
});

Deno.test("malformed or unsupported reads give 0 and never throw", () => {
  const seg = new Segmenter();
  const good = tsoRead({ seq: 1, options: TS(1, 2), payload: randomBytes(3000) }, 1000);
  assert.equal(seg.begin(good, 0, good.length), 3);
  const bad = (what: string, mutate: (b: Uint8Array) => Uint8Array | void, len?: number) => {
    const b = good.slice();
    const r = mutate(b) ?? b;
    assert.equal(seg.begin(r, 0, len ?? r.length), 0, what);
    assert.equal(seg.segment(0, new Uint8Array(70000), 0), 0, `${what}: nothing to segment`);
  };
  bad("shorter than a vnet header", () => new Uint8Array(9));
  bad("vnet header only", () => good.slice(0, 10));
  bad("length beyond the buffer", () => {}, good.length + 1);
  bad("gso_size 0", (b) => void (b[4] = b[5] = 0));
  bad("gso type UDP (UFO)", (b) => void (b[1] = VIRTIO_NET_HDR_GSO_UDP));
  bad("gso type 2 (unknown)", (b) => void (b[1] = 2));
  bad("gso type 5 (UDP_L4, not asked for)", (b) => void (b[1] = 5));
  bad("TCPV6 type on an IPv4 packet", (b) => void (b[1] = VIRTIO_NET_HDR_GSO_TCPV6));
  bad("IHL below 5", (b) => void (b[10] = 0x44));
  bad("IHL past the end", (b) => void (b[10] = 0x4f), 10 + 40);
  bad("not TCP", (b) => void (b[10 + 9] = 17));
  bad("a fragment", (b) => void (b[10 + 6] |= 0x20));
  bad("TCP data offset below 5", (b) => void (b[10 + 20 + 12] = 0x40));
  bad("TCP header past the end", (b) => void (b[10 + 20 + 12] = 0xf0), 10 + 50);
  bad("truncated IPv6 header", (b) => void (b[10] = 0x60), 10 + 30);
  bad("NEEDS_CSUM pointing past the end", (b) => {
    writeVnetHdr(b, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, b.length - 10 - 1, 0);
  });
  // Random garbage, with and without plausible headers: no throw, and any count it claims is segmentable.
  const dst = new Uint8Array(70000);
  for (let k = 0; k < 3000; k++) {
    const b = randomBytes(10 + (k % 300));
    if (k % 3 === 0) b[1] = [1, 4, 0x81, 3, 0][k % 5]!;
    if (k % 2 === 0) b[10] = k % 4 === 0 ? 0x45 : 0x60;
    if (k % 6 === 0) b[4] = 1 + (k % 7);
    const n = seg.begin(b, 0, b.length);
    for (let i = 0; i < Math.min(n, 50); i++) assert.ok(seg.segment(i, dst, 0) > 0);
  }
});

// ---- Coalescer ----

/** Places packets into slots of one block, 16 bytes in (room for the vnet header), as the daemon's ring. */
class Slots {
  readonly block: Uint8Array;
  n = 0;
  constructor(readonly size = 2048, count = 300) {
    this.block = new Uint8Array(size * count);
  }
  put(pkt: Uint8Array): [Uint8Array, number, number] {
    const buf = this.block.subarray(this.n * this.size, (this.n + 1) * this.size);
    this.n++;
    buf.set(pkt, 16);
    return [buf, 16, pkt.length];
  }
}

/** Flushes and turns every output back into IP packets with the Segmenter (the TUN's view of them). */
function flushAndSegment(c: Coalescer): { outputs: number; segs: number[]; packets: Uint8Array[] } {
  const outputs = c.flush();
  const seg = new Segmenter();
  const packets: Uint8Array[] = [];
  const segs: number[] = [];
  for (let i = 0; i < outputs; i++) {
    const got = segmentAll(seg, c.outBuf(i), c.outOff(i), c.outLen(i));
    assert.ok(got.length > 0, `output ${i} segments`);
    assert.equal(got.length, c.outSegments(i));
    segs.push(got.length);
    packets.push(...got);
  }
  return { outputs, segs, packets };
}

Deno.test("consecutive segments coalesce, and segmenting the result gives back the originals", () => {
  for (const v6 of [false, true]) {
    const spec: TcpSpec = {
      v6,
      seq: 0xfffff000,
      flags: ACK | PSH,
      options: TS(0xdeadbeef, 0x01020304),
      payload: randomBytes(9 * 1368 + 200),
    };
    const originals = expectedSegments(spec, 1368);
    const c = new Coalescer();
    const slots = new Slots();
    for (const p of originals) assert.ok(c.add(...slots.put(p)));
    assert.equal(c.count, 10);
    assert.equal(c.flush(), 1);
    const buf = c.outBuf(0), off = c.outOff(0), len = c.outLen(0);
    const h = vnetFields(buf, off);
    const iph = v6 ? 40 : 20;
    assert.deepEqual(h, {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4,
      hdrLen: iph + 32,
      gsoSize: 1368,
      csumStart: iph,
      csumOffset: 16,
    });
    const pkt = buf.subarray(off + VNET_HDR_LEN, off + len);
    assert.equal(pkt.length, iph + 32 + spec.payload.length);
    const dv = new DataView(pkt.buffer, pkt.byteOffset);
    if (v6) assert.equal(dv.getUint16(4), pkt.length - 40);
    else {
      assert.equal(dv.getUint16(2), pkt.length);
      assert.equal(naiveSum(pkt.subarray(0, 20)), 0xffff, "IPv4 header checksum");
    }
    // CHECKSUM_PARTIAL: the field is the (uncomplemented) pseudo-header sum.
    assert.equal(dv.getUint16(iph + 16), naiveSum([], pseudo(v6, pkt, 6, pkt.length - iph)));
    assert.equal(pkt[iph + 13], ACK | PSH, "PSH of the last segment");
    assert.deepEqual(pkt.subarray(iph + 32), spec.payload);
    // The round trip.
    const again = segmentAll(new Segmenter(), buf, off, len);
    assert.equal(again.length, originals.length);
    for (let i = 0; i < originals.length; i++) {
      assert.deepEqual(again[i], originals[i], `v${v6 ? 6 : 4} ${i}`);
    }
  }
});

Deno.test("packets that must not merge are written singly with a DATA_VALID header, in place", () => {
  const c = new Coalescer();
  const slots = new Slots();
  const base = { seq: 1000, options: TS(5, 6), payload: randomBytes(1000) };
  const [b, o] = slots.put(tcpPacket(base));
  c.add(b, o, tcpPacket(base).length);
  assert.equal(c.flush(), 1);
  assert.equal(c.outBuf(0), b);
  assert.equal(c.outOff(0), o - VNET_HDR_LEN);
  assert.equal(c.outLen(0), tcpPacket(base).length + VNET_HDR_LEN);
  assert.deepEqual(vnetFields(b, o - VNET_HDR_LEN), {
    flags: VIRTIO_NET_HDR_F_DATA_VALID,
    gsoType: 0,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
  });

  // Pairs whose second packet may not join the first.
  const second: [string, TcpSpec][] = [
    ["a gap in sequence numbers", { ...base, seq: 2001 }],
    ["an overlap", { ...base, seq: 1999 }],
    ["another destination port", { ...base, seq: 2000, dport: 1 }],
    ["another source address", { ...base, seq: 2000, src: 2 }],
    ["another ACK number", { ...base, seq: 2000, ack: 778 }],
    ["another window", { ...base, seq: 2000, window: 503 }],
    ["other timestamps", { ...base, seq: 2000, options: TS(6, 6) }],
    ["other TCP options length", { ...base, seq: 2000, options: [...TS(5, 6), 1, 1, 1, 1] }],
    ["another TTL", { ...base, seq: 2000, ttl: 63 }],
    ["another TOS", { ...base, seq: 2000, tos: 4 }],
    ["no DF", { ...base, seq: 2000, df: false, id: 0x1235 }],
    ["SYN", { ...base, seq: 2000, flags: ACK | SYN }],
    ["FIN", { ...base, seq: 2000, flags: ACK | FIN }],
    ["RST", { ...base, seq: 2000, flags: ACK | RST }],
    ["URG", { ...base, seq: 2000, flags: ACK | URG }],
    ["ECE", { ...base, seq: 2000, flags: ACK | ECE }],
    ["CWR", { ...base, seq: 2000, flags: ACK | CWR }],
    ["no ACK", { ...base, seq: 2000, flags: PSH }],
    ["a larger payload", { ...base, seq: 2000, payload: randomBytes(1001) }],
    ["no payload", { ...base, seq: 2000, payload: new Uint8Array(0) }],
    ["IP options", { ...base, seq: 2000, ipOptions: [1, 1, 1, 0] }],
  ];
  for (const [what, spec] of second) {
    const c2 = new Coalescer();
    const s2 = new Slots();
    const p1 = tcpPacket(base), p2 = tcpPacket(spec);
    c2.add(...s2.put(p1));
    c2.add(...s2.put(p2));
    const r = flushAndSegment(c2);
    assert.equal(r.outputs, 2, what);
    assert.deepEqual(r.packets, [p1, p2], what);
  }
  // After a PSH the group is over.
  const c3 = new Coalescer();
  const s3 = new Slots();
  const p1 = tcpPacket({ ...base, flags: ACK | PSH }), p2 = tcpPacket({ ...base, seq: 2000 });
  c3.add(...s3.put(p1));
  c3.add(...s3.put(p2));
  assert.deepEqual(flushAndSegment(c3).segs, [1, 1]);
});

Deno.test("IPv4 IDs must count up without DF; with DF they do not matter", () => {
  const mk = (df: boolean, ids: number[]) => {
    const c = new Coalescer();
    const s = new Slots();
    ids.forEach((id, i) => c.add(...s.put(tcpPacket({ seq: 100 * i, id, df, payload: randomBytes(100) }))));
    return flushAndSegment(c).segs;
  };
  assert.deepEqual(mk(false, [0xffff, 0, 1]), [3]);
  assert.deepEqual(mk(false, [7, 9, 10]), [1, 2]);
  assert.deepEqual(mk(true, [7, 9, 3]), [3]);
});

Deno.test("a shorter segment ends its group; groups stay within 65,535 bytes", () => {
  const c = new Coalescer();
  const s = new Slots(2048, 300);
  const sizes = [1000, 1000, 500, 1000, 1000];
  let seq = 1;
  const pkts = sizes.map((n, i) => {
    const p = tcpPacket({ seq, id: 0x1234 + i, payload: randomBytes(n) });
    seq += n;
    return p;
  });
  for (const p of pkts) c.add(...s.put(p));
  const r = flushAndSegment(c);
  assert.deepEqual(r.segs, [3, 2]);
  assert.deepEqual(r.packets, pkts);

  // 100 segments of 1400 bytes: 46 fit (40 + 46 * 1400 = 64,440), then the next group starts.
  const c2 = new Coalescer();
  const s2 = new Slots(2048, 120);
  const many = expectedSegments({ seq: 9, df: true, payload: randomBytes(100 * 1400) }, 1400);
  for (const p of many) c2.add(...s2.put(p));
  const r2 = flushAndSegment(c2);
  assert.deepEqual(r2.segs, [46, 46, 8]);
  assert.deepEqual(r2.packets, many);
  for (let i = 0; i < 3; i++) assert.ok(c2.outLen(i) - VNET_HDR_LEN <= 65535);
});

Deno.test("flows are coalesced separately, non-TCP passes through, and order within a flow is kept", () => {
  const c = new Coalescer();
  const s = new Slots();
  const a = expectedSegments(
    { seq: 1, sport: 1111, options: TS(1, 1), payload: randomBytes(6 * 1200) },
    1200,
  );
  const b = expectedSegments({ v6: true, seq: 50, sport: 2222, payload: randomBytes(4 * 1300) }, 1300);
  const udp = new Uint8Array(60);
  udp[0] = 0x45;
  udp[9] = 17;
  new DataView(udp.buffer).setUint16(2, 60);
  const icmp6 = new Uint8Array(48);
  icmp6[0] = 0x60;
  icmp6[6] = 58;
  // A pure ACK of flow a (no payload) in the middle: a+ must not jump ahead of it.
  const ackOnly = tcpPacket({
    seq: 1 + 3 * 1200,
    sport: 1111,
    options: TS(1, 1),
    payload: new Uint8Array(0),
  });
  const order = [a[0], b[0], a[1], udp, b[1], a[2], ackOnly, a[3], b[2], icmp6, a[4], b[3], a[5]];
  for (const p of order) assert.ok(c.add(...s.put(p!)));
  const r = flushAndSegment(c);
  // Outputs in the order of their first packets: a[0..2], b[0..3], udp, ack, a[3..5], icmp6.
  assert.deepEqual(r.segs, [3, 4, 1, 1, 3, 1]);
  assert.deepEqual(r.packets, [a[0], a[1], a[2], ...b, udp, ackOnly, a[3], a[4], a[5], icmp6]);
  // Tiny packets (shorter than any TCP/IP header) pass as they are too.
  const c2 = new Coalescer();
  const tiny = new Slots();
  c2.add(...tiny.put(Uint8Array.of(0x45, 0, 0, 3)));
  assert.equal(c2.flush(), 1);
  assert.equal(c2.outLen(0), 14);
});

Deno.test("random interleavings of flows round-trip with each flow's order intact", () => {
  const seg = new Segmenter();
  for (let round = 0; round < 20; round++) {
    const c = new Coalescer(128);
    const s = new Slots(1600, 140);
    const flows: Uint8Array[][] = [];
    for (let f = 0; f < 4; f++) {
      const v6 = f % 2 === 1;
      const gso = 200 + 100 * f;
      flows.push(expectedSegments({
        v6,
        sport: 1000 + f,
        seq: (round * 99991 * (f + 1)) >>> 0,
        flags: ACK | (f === 0 ? PSH : 0),
        options: f === 2 ? [] : TS(round, f),
        payload: randomBytes(gso * (10 + f) - f * 37),
      }, gso));
    }
    // A gap: one packet of flow 3 never arrives (the last packet of each flow but flow 0 is also shorter).
    flows[3]!.splice(4, 1);
    const next = flows.map(() => 0);
    const added: Uint8Array[] = [];
    const pick = new Uint8Array(1);
    while (next.some((k, f) => k < flows[f]!.length)) {
      rng(pick);
      const f = pick[0]! % 4;
      if (next[f]! >= flows[f]!.length) continue;
      const p = flows[f]![next[f]!++]!;
      added.push(p);
      if (!c.add(...s.put(p))) throw new Error("unexpectedly full");
    }
    const outputs = c.flush();
    const back: Uint8Array[] = [];
    for (let i = 0; i < outputs; i++) back.push(...segmentAll(seg, c.outBuf(i), c.outOff(i), c.outLen(i)));
    assert.equal(back.length, added.length);
    assert.ok(outputs < added.length / 3, `merged: ${outputs} outputs for ${added.length} packets`);
    const key = (p: Uint8Array) => (p[0]! >>> 4 === 6 ? p[41]! : p[21]!) + (p[0]! >>> 4) * 1000;
    for (const k of new Set(added.map(key))) {
      assert.deepEqual(back.filter((p) => key(p) === k), added.filter((p) => key(p) === k), `round ${round}`);
    }
  }
});

Deno.test("capacity, full, the coalesce switch and reuse after a flush", () => {
  const c = new Coalescer(4);
  const s = new Slots();
  const pkts = expectedSegments({ seq: 1, payload: randomBytes(6 * 100) }, 100);
  for (let i = 0; i < 4; i++) assert.ok(c.add(...s.put(pkts[i]!)));
  assert.ok(c.full);
  assert.equal(c.add(...s.put(pkts[4]!)), false);
  assert.equal(c.count, 4);
  assert.equal(c.flush(), 1);
  assert.equal(c.flush(), 1, "flush is idempotent");
  assert.equal(c.count, 0);
  assert.ok(!c.full);
  // The next round starts fresh: the flow table of the last round is forgotten.
  assert.ok(c.add(...s.put(pkts[4]!)));
  assert.ok(c.add(...s.put(pkts[5]!)));
  assert.deepEqual(flushAndSegment(c).packets, [pkts[4], pkts[5]]);
  // Off: every packet singly.
  c.coalesce = false;
  for (let i = 0; i < 4; i++) c.add(...s.put(pkts[i]!));
  const r = flushAndSegment(c);
  assert.deepEqual(r.segs, [1, 1, 1, 1]);
  assert.deepEqual(r.packets, pkts.slice(0, 4));
  assert.equal(c.flush(), 4);
  assert.throws(() => c.add(new Uint8Array(100), 9, 50), RangeError);
  // Flushing nothing yields nothing.
  const empty = new Coalescer();
  assert.equal(empty.flush(), 0);
});

Deno.test("the coalescer's buffer grows when one flush needs more than it has", () => {
  const c = new Coalescer(256);
  const s = new Slots(1600, 260);
  // 8 flows of 30 segments: 8 super-packets of ~42 KB, more than the initial room for 4.
  const flows = Array.from(
    { length: 8 },
    (_, f) => expectedSegments({ sport: 3000 + f, seq: f, payload: randomBytes(30 * 1400) }, 1400),
  );
  const added: Uint8Array[] = [];
  for (let k = 0; k < 30; k++) {
    for (const fl of flows) {
      added.push(fl[k]!);
      c.add(...s.put(fl[k]!));
    }
  }
  const r = flushAndSegment(c);
  assert.deepEqual(r.segs, [30, 30, 30, 30, 30, 30, 30, 30]);
  assert.deepEqual(r.packets, flows.flat());
  assert.equal(r.packets.length, added.length);
});

Deno.test("a caller's arena in the slots' own ArrayBuffer holds the merged packets", () => {
  const s = new Slots(1600, 80);
  const arena = s.block.subarray(70 * 1600); // The last 10 slots' room: 16,000 bytes.
  const c = new Coalescer(64, arena);
  const pkts = expectedSegments(
    { v6: true, seq: 3, options: TS(1, 2), payload: randomBytes(8 * 1348) },
    1348,
  );
  for (const p of pkts) c.add(...s.put(p));
  const r = flushAndSegment(c);
  assert.deepEqual(r.segs, [8]);
  assert.equal(c.outBuf(0), arena);
  assert.deepEqual(r.packets, pkts);
  // A flush that needs more room than the arena has gets a buffer of the coalescer's own.
  const more = expectedSegments({ seq: 3, payload: randomBytes(40 * 1400) }, 1400);
  const s2 = new Slots(1600, 50);
  for (const p of more) c.add(...s2.put(p));
  const r2 = flushAndSegment(c);
  assert.notEqual(c.outBuf(0), arena);
  assert.deepEqual(r2.packets, more);
});
