/**
 * UDP segmentation offload on the TUN (USO, issue 17): UDP super-packets split into datagrams by the Segmenter
 * (lib/gso.ts), as __udp_gso_segment would, and consecutive datagrams of a flow merged by the Coalescer
 * (lib/gro.ts) into one USO packet that splits back into exactly the datagrams it was made of. IPv4 and IPv6,
 * checksums checked against an independent RFC 1071 reference, a shorter last datagram, and the cases that
 * must not merge.
 */
import assert from "node:assert/strict";
import { TunDevice } from "../../cmd/tun_device.ts";
import { Level, Logger } from "../../cmd/log.ts";
import { Coalescer, UDP_COALESCE_MAX_SEGMENTS } from "../../lib/gro.ts";
import {
  Segmenter,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../../lib/gso.ts";
import {
  checksumsValid,
  naiveSum,
  pseudo,
  randomBytes,
  segmentAll,
  tcpPacket,
  vnetFields,
} from "./_offload.ts";

interface UdpSpec {
  v6?: boolean;
  sport?: number;
  dport?: number;
  id?: number;
  ttl?: number;
  tos?: number;
  df?: boolean;
  /** IPv6 only: a hop-by-hop options header of 8 bytes before the UDP header. */
  hopByHop?: boolean;
  payload: Uint8Array;
}

/** A complete UDP/IP packet with correct checksums. */
function udpPacket(s: UdpSpec): Uint8Array {
  const v6 = s.v6 ?? false;
  const ext = v6 && s.hopByHop ? 8 : 0;
  const iph = v6 ? 40 + ext : 20;
  const len = iph + 8 + s.payload.length;
  const p = new Uint8Array(len);
  const v = new DataView(p.buffer);
  if (v6) {
    v.setUint32(0, (6 << 28) | ((s.tos ?? 0) << 20));
    v.setUint16(4, len - 40);
    p[6] = ext ? 0 : 17;
    p[7] = s.ttl ?? 64;
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99], 24);
    if (ext) p.set([17, 0, 1, 4, 0, 0, 0, 0], 40); // next header UDP, length 0 (8 bytes), a PadN option
  } else {
    p[0] = 0x45;
    p[1] = s.tos ?? 0;
    v.setUint16(2, len);
    v.setUint16(4, s.id ?? 0x2345);
    p[6] = (s.df ?? true) ? 0x40 : 0;
    p[8] = s.ttl ?? 64;
    p[9] = 17;
    p.set([10, 0, 0, 1], 12);
    p.set([10, 0, 0, 99], 16);
    v.setUint16(10, ~naiveSum(p.subarray(0, 20)) & 0xffff);
  }
  v.setUint16(iph, s.sport ?? 40000);
  v.setUint16(iph + 2, s.dport ?? 5201);
  v.setUint16(iph + 4, len - iph);
  p.set(s.payload, iph + 8);
  // The pseudo-header of IPv6 names the final destination and the UDP length (not the payload length).
  const ps = v6 ? udpPseudo6(p, len - iph) : pseudo(false, p, 17, len - iph);
  v.setUint16(iph + 6, (~naiveSum(p.subarray(iph), ps) & 0xffff) || 0xffff);
  return p;
}

function udpPseudo6(p: Uint8Array, udpLen: number): number {
  return naiveSum([...p.subarray(8, 40), 0, 0, udpLen >>> 8, udpLen & 255, 0, 0, 0, 17]);
}

/** Whether a UDP packet's checksums verify (IPv4 header too). */
function udpValid(p: Uint8Array): boolean {
  const v6 = p[0]! >>> 4 === 6;
  if (!v6) return checksumsValid(p);
  const iph = p[6] === 17 ? 40 : 48;
  return naiveSum(p.subarray(iph), udpPseudo6(p, p.length - iph)) === 0xffff;
}

/** The datagrams the kernel's __udp_gso_segment makes of `s` cut every `gso` payload bytes. */
function expected(s: UdpSpec, gso: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i * gso < s.payload.length; i++) {
    out.push(
      udpPacket({
        ...s,
        id: ((s.id ?? 0x2345) + i) & 0xffff,
        payload: s.payload.subarray(i * gso, (i + 1) * gso),
      }),
    );
  }
  return out;
}

/** A USO super-packet as the TUN hands it over: vnet header, then the whole datagram, checksum partial. */
function usoRead(s: UdpSpec, gso: number): Uint8Array {
  const pkt = udpPacket(s);
  const v6 = s.v6 ?? false;
  const iph = v6 ? (s.hopByHop ? 48 : 40) : 20;
  const ps = v6 ? udpPseudo6(pkt, pkt.length - iph) : pseudo(false, pkt, 17, pkt.length - iph);
  pkt[iph + 6] = ps >>> 8;
  pkt[iph + 7] = ps & 255;
  const out = new Uint8Array(VNET_HDR_LEN + pkt.length);
  writeVnetHdr(out, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, iph + 8, gso, iph, 6);
  out.set(pkt, VNET_HDR_LEN);
  return out;
}

Deno.test("USO read: a UDP super-packet splits into datagrams with their own lengths and checksums", () => {
  const seg = new Segmenter();
  for (
    const s of [
      { payload: randomBytes(3 * 1372 + 500) }, // the last one shorter
      { payload: randomBytes(4 * 1200), df: false, id: 0xfffe }, // IDs wrap
      { v6: true, payload: randomBytes(2 * 1352 + 1) },
      { v6: true, hopByHop: true, payload: randomBytes(3 * 1000) },
    ] as UdpSpec[]
  ) {
    const gso = s.v6 ? (s.payload.length === 3000 ? 1000 : 1352) : s.payload.length === 4800 ? 1200 : 1372;
    const got = segmentAll(seg, usoRead(s, gso));
    const want = expected(s, gso);
    assert.equal(got.length, want.length);
    assert.equal(seg.gsoType, VIRTIO_NET_HDR_GSO_UDP_L4);
    got.forEach((g, i) => {
      assert.ok(udpValid(g), `datagram ${i} has valid checksums`);
      assert.deepEqual(g, want[i], `datagram ${i} is what the kernel would have sent`);
    });
    assert.equal(got.at(-1)!.length, want.at(-1)!.length);
  }
});

Deno.test("USO read: refused when the type does not match the packet, for fragments, and UFO", () => {
  const seg = new Segmenter();
  const read = usoRead({ payload: randomBytes(3000) }, 1000);
  read[VNET_HDR_LEN + 6] = 0x20; // more fragments
  assert.equal(seg.begin(read, 0, read.length), 0);
  const tcpAsUdp = new Uint8Array(VNET_HDR_LEN + 200);
  tcpAsUdp.set(tcpPacket({ seq: 1, payload: randomBytes(140) }), VNET_HDR_LEN);
  writeVnetHdr(tcpAsUdp, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, 28, 50, 20, 6);
  assert.equal(seg.begin(tcpAsUdp, 0, tcpAsUdp.length), 0);
  const udpAsTcp = usoRead({ payload: randomBytes(3000) }, 1000);
  udpAsTcp[1] = VIRTIO_NET_HDR_GSO_TCPV4;
  assert.equal(seg.begin(udpAsTcp, 0, udpAsTcp.length), 0);
  const ufo = usoRead({ payload: randomBytes(3000) }, 1000);
  ufo[1] = 3; // VIRTIO_NET_HDR_GSO_UDP
  assert.equal(seg.begin(ufo, 0, ufo.length), 0);
});

/** Puts packets 16 bytes into slots of one block (room for the vnet header), as the daemon's ring does. */
function slotted(pkts: Uint8Array[]): [Uint8Array, number, number][] {
  const block = new Uint8Array(2048 * pkts.length);
  return pkts.map((p, i) => {
    const buf = block.subarray(i * 2048, (i + 1) * 2048);
    buf.set(p, 16);
    return [buf, 16, p.length];
  });
}

function coalesce(pkts: Uint8Array[], udp = true): { c: Coalescer; n: number } {
  const c = new Coalescer();
  c.coalesceUdp = udp;
  for (const [b, o, l] of slotted(pkts)) assert.ok(c.add(b, o, l));
  return { c, n: c.flush() };
}

/** Every output of the last flush, split back into IP packets as the kernel would. */
function split(c: Coalescer, n: number): Uint8Array[][] {
  const seg = new Segmenter();
  const out: Uint8Array[][] = [];
  for (let i = 0; i < n; i++) out.push(segmentAll(seg, c.outBuf(i), c.outOff(i), c.outLen(i)));
  return out;
}

Deno.test("USO write: consecutive datagrams of a flow become one USO packet that splits back into them", () => {
  for (const v6 of [false, true]) {
    const s: UdpSpec = { v6, payload: randomBytes(5 * 1300 + 77) };
    const dgrams = expected(s, 1300); // 5 full datagrams and a shorter last one, IDs counting up
    const { c, n } = coalesce(dgrams);
    assert.equal(n, 1, "one write");
    assert.equal(c.outSegments(0), 6);
    const h = vnetFields(c.outBuf(0), c.outOff(0));
    const iph = v6 ? 40 : 20;
    assert.deepEqual(h, {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_UDP_L4,
      hdrLen: iph + 8,
      gsoSize: 1300,
      csumStart: iph,
      csumOffset: 6,
    });
    const merged = c.outBuf(0).subarray(c.outOff(0) + VNET_HDR_LEN, c.outOff(0) + c.outLen(0));
    assert.equal(merged.length, iph + 8 + s.payload.length);
    assert.equal((merged[iph + 4]! << 8) | merged[iph + 5]!, merged.length - iph, "UDP length of the whole");
    if (!v6) assert.equal(naiveSum(merged.subarray(0, 20)), 0xffff, "IPv4 header checksum");
    const [back] = split(c, n);
    assert.deepEqual(back, dgrams, `IPv${v6 ? 6 : 4}: split back byte for byte`);
  }
});

Deno.test("USO write: what must not merge stays apart, in order", () => {
  const p = (payload: number, o: Partial<UdpSpec> = {}) => udpPacket({ payload: randomBytes(payload), ...o });
  // Off (the TUN has no USO): every datagram singly, as plain packets.
  const off = coalesce([p(1000), p(1000)], false);
  assert.equal(off.n, 2);
  assert.equal(vnetFields(off.c.outBuf(0), off.c.outOff(0)).gsoType, VIRTIO_NET_HDR_GSO_NONE);
  // Another port, another TTL or TOS, a larger datagram after a smaller, anything after a shorter one.
  // [what, packets, datagrams per output, the packets in output order]
  const cases: [string, Uint8Array[], number[], number[]][] = [
    ["other ports", [p(1000), p(1000, { dport: 9 }), p(1000)], [2, 1], [0, 2, 1]],
    ["other TTL", [p(1000), p(1000, { ttl: 3 })], [1, 1], [0, 1]],
    ["larger after smaller", [p(800), p(1000)], [1, 1], [0, 1]],
    ["after a shorter last", [p(1000), p(500), p(1000)], [2, 1], [0, 1, 2]],
    ["TOS", [p(1000), p(1000, { tos: 4 })], [1, 1], [0, 1]],
  ];
  for (const [what, pkts, shape, order] of cases) {
    const { c, n } = coalesce(pkts);
    const outs = split(c, n);
    assert.deepEqual(outs.map((o) => o.length), shape, what);
    // With DF, IPv4 IDs carry no meaning, and segmentation numbers them from the first one's (as the kernel).
    const sansId = (x: Uint8Array) => x.slice().fill(0, 4, 6).fill(0, 10, 12);
    assert.deepEqual(
      outs.flat().map(sansId),
      order.map((i) => sansId(pkts[i]!)),
      `${what}: the same datagrams, a flow's in order`,
    );
    for (const o of outs.flat()) assert.ok(udpValid(o), `${what}: checksums`);
  }
  // TCP and UDP of the same ports do not join; neither does a datagram whose UDP length is wrong.
  const tcp = tcpPacket({ seq: 1, sport: 40000, dport: 5201, payload: randomBytes(1000) });
  const mixed = coalesce([p(1000), tcp, p(1000)]);
  assert.deepEqual(split(mixed.c, mixed.n).map((o) => o.length), [2, 1]);
  const bad = p(1000);
  bad[20 + 5] ^= 1;
  const b = coalesce([p(1000), bad]);
  assert.equal(b.n, 2);
  // At most UDP_COALESCE_MAX_SEGMENTS datagrams per merged packet (each 100 bytes: far below 64 KB).
  const many = coalesce(
    Array.from({ length: UDP_COALESCE_MAX_SEGMENTS + 3 }, (_, i) => p(100, { id: i, df: false })),
  );
  assert.deepEqual(split(many.c, many.n).map((o) => o.length), [UDP_COALESCE_MAX_SEGMENTS, 3]);
});

Deno.test("TunDevice: USO merges only with a TUN that took USO; a refused UDP merge stops UDP merging only", () => {
  const writes: { gsoType: number; len: number }[] = [];
  let refuseUdp = true;
  const file = (uso: boolean) => ({
    name: "uso0",
    vnetHdr: true,
    offload: true,
    uso,
    readAt: () => 0,
    writeAt: (buf: Uint8Array, off: number, len: number) => {
      const gsoType = buf[off + 1]!;
      writes.push({ gsoType, len });
      return refuseUdp && gsoType === VIRTIO_NET_HDR_GSO_UDP_L4 ? -22 : len;
    },
  });
  const log = new Logger(Level.Error, "test", "text");
  const make = (uso: boolean) =>
    new TunDevice({ file: file(uso), ready: () => false, ifindex: 0, links: null, mtu: 1420, log });
  const send = (dev: TunDevice, pkts: Uint8Array[]) => {
    for (const [b, o, l] of slotted(pkts)) dev.write(b, o, l);
    dev.flush();
  };
  const udp = () => expected({ payload: randomBytes(3000) }, 1000);

  const plain = make(false);
  assert.ok(plain.coalescing && !plain.coalescingUdp, "a TUN without USO: TCP merges only");
  send(plain, udp());
  assert.deepEqual(writes.splice(0).map((w) => w.gsoType), [0, 0, 0]);

  const dev = make(true);
  assert.ok(dev.coalescingUdp);
  send(dev, udp());
  assert.deepEqual(
    writes.splice(0).map((w) => w.gsoType),
    [VIRTIO_NET_HDR_GSO_UDP_L4],
    "merged, and refused",
  );
  assert.ok(!dev.coalescingUdp && dev.coalescing, "UDP merging stops, TCP merging stays");
  refuseUdp = false;
  send(dev, udp());
  assert.deepEqual(writes.splice(0).map((w) => w.gsoType), [0, 0, 0], "then datagrams go singly");
  const tcp = [0, 1, 2].map((i) => tcpPacket({ seq: 1000 * i, payload: randomBytes(1000), id: i }));
  send(dev, tcp);
  assert.deepEqual(writes.splice(0).map((w) => w.gsoType), [VIRTIO_NET_HDR_GSO_TCPV4]);
});
