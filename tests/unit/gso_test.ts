/** The Segmenter (lib/gso.ts): TSO super-packets split as tcp_gso_segment does, NEEDS_CSUM completed. */
import assert from "node:assert/strict";
import {
  Segmenter,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "../../lib/gso.ts";
import {
  ACK,
  checksumsValid,
  CWR,
  expectedSegments,
  FIN,
  naiveSum,
  pseudo,
  PSH,
  randomBytes,
  segmentAll,
  tcpPacket,
  type TcpSpec,
  TS,
  tsoRead,
} from "./_offload.ts";

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
