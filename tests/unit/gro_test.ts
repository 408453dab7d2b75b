/** The Coalescer (lib/gro.ts): segments merged as tcp_gro_receive does, and back through the Segmenter. */
import assert from "node:assert/strict";
import { Coalescer } from "../../lib/gro.ts";
import {
  Segmenter,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VNET_HDR_LEN,
} from "../../lib/gso.ts";
import {
  ACK,
  CWR,
  ECE,
  expectedSegments,
  FIN,
  naiveSum,
  pseudo,
  PSH,
  randomBytes,
  rng,
  RST,
  segmentAll,
  SYN,
  tcpPacket,
  type TcpSpec,
  TS,
  URG,
  vnetFields,
} from "./_offload.ts";

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
