/**
 * The TUN with a virtio_net_hdr and offloads (root): the kernel's own TCP stack, talking through the TUN to a
 * peer this test plays by hand, hands over TSO super-packets and takes coalesced (GRO) ones.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { addAddress, MAX_PACKET, openTun, setMtu, setUp, type Tun, VNET_HDR_SIZE } from "../../ffi/tun.ts";
import { pinned } from "../../ffi/runtime.ts";
import { csumFold, csumPartial, pseudoHeaderSum4 } from "../../lib/checksum.ts";
import { Coalescer } from "../../lib/gro.ts";
import {
  Segmenter,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VNET_HDR_LEN,
} from "../../lib/gso.ts";
import { checksum, isRoot, linkInfo, uniqueName } from "./_helpers.ts";

const ignore = !isRoot;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TUN with vnet headers, addressed 10.204.X.1/24 and up; the peer is 10.204.X.2. */
function offloadTun(mtu = 1500): { tun: Tun; local: Uint8Array; peer: Uint8Array; peerText: string } {
  const tun = openTun(uniqueName("g"), { vnetHdr: true });
  const octet = 100 + ((Deno.pid + mtu) % 100);
  const local = new Uint8Array([10, 204, octet, 1]);
  const peer = new Uint8Array([10, 204, octet, 2]);
  try {
    setMtu(tun.name, mtu);
    addAddress(tun.name, 4, local, 24);
    setUp(tun.name, true);
  } catch (e) {
    tun.close();
    throw e;
  }
  return { tun, local, peer, peerText: `10.204.${octet}.2` };
}

/**
 * Reads from the TUN until `match` accepts a read (vnet header at 0), yielding to the event loop between
 * empty reads so the runtime's own sockets make progress. Bounded by `ms`.
 */
async function readUntil(
  tun: Tun,
  buf: Uint8Array,
  match: (n: number) => boolean,
  ms = 3000,
): Promise<number> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const n = tun.readAt(buf, 0, buf.length);
    if (n > 0) {
      if (match(n)) return n;
      continue;
    }
    await sleep(2);
  }
  return 0;
}

/** Whether the IPv4 packet `p` (from its first byte) has valid IP and TCP/UDP checksums (naive RFC 1071). */
function checksumsValid(p: Uint8Array): boolean {
  const ihl = (p[0]! & 15) * 4;
  if (checksum(p.subarray(0, ihl)) !== 0) return false;
  const l4 = p.subarray(ihl);
  const ph = new Uint8Array(12);
  ph.set(p.subarray(12, 20));
  ph[9] = p[9]!;
  ph[10] = l4.length >>> 8;
  ph[11] = l4.length & 255;
  let sum = 0;
  for (let i = 0; i < 12; i += 2) sum += (ph[i]! << 8) | ph[i + 1]!;
  return checksum(l4, sum) === 0;
}

/** An IPv4/TCP packet from the peer with correct checksums, at `buf[off..)`; returns its length. */
function writeTcp4(
  buf: Uint8Array,
  off: number,
  f: {
    src: Uint8Array;
    dst: Uint8Array;
    sport: number;
    dport: number;
    seq: number;
    ack: number;
    flags: number;
    id: number;
    options?: number[];
    payload?: Uint8Array;
  },
): number {
  const opts = f.options ?? [];
  const thl = 20 + opts.length;
  const pl = f.payload?.length ?? 0;
  const len = 20 + thl + pl;
  buf.fill(0, off, off + len);
  const v = new DataView(buf.buffer, buf.byteOffset + off, len);
  buf[off] = 0x45;
  v.setUint16(2, len);
  v.setUint16(4, f.id);
  buf[off + 6] = 0x40; // DF
  buf[off + 8] = 64;
  buf[off + 9] = 6;
  buf.set(f.src, off + 12);
  buf.set(f.dst, off + 16);
  v.setUint16(10, csumFold(csumPartial(buf, off, 20, 0)));
  v.setUint16(20, f.sport);
  v.setUint16(22, f.dport);
  v.setUint32(24, f.seq >>> 0);
  v.setUint32(28, f.ack >>> 0);
  buf[off + 32] = (thl / 4) << 4;
  buf[off + 33] = f.flags;
  v.setUint16(34, 65535);
  buf.set(opts, off + 40);
  if (f.payload) buf.set(f.payload, off + 20 + thl);
  v.setUint16(36, csumFold(csumPartial(buf, off + 20, thl + pl, pseudoHeaderSum4(buf, off, 6, thl + pl))));
  return len;
}

Deno.test({ name: "a TUN without vnetHdr reports no header and no offload", ignore }, () => {
  const tun = openTun(uniqueName("h"));
  try {
    assert.equal(tun.vnetHdr, false);
    assert.equal(tun.offload, false);
  } finally {
    tun.close();
  }
});

Deno.test(
  { name: "vnetHdr: offloads are accepted and a UDP datagram arrives with a vnet header", ignore },
  async () => {
    const { tun, local, peerText } = offloadTun();
    const sock = dgram.createSocket("udp4");
    try {
      assert.equal(tun.vnetHdr, true);
      assert.equal(tun.offload, true, "TUNSETOFFLOAD with TUN_F_CSUM|TSO4|TSO6 is accepted by this kernel");
      assert.ok(linkInfo(tun.name));
      const buf = pinned(MAX_PACKET + VNET_HDR_SIZE);
      const payload = new Uint8Array(300).map((_, i) => i * 13);
      await new Promise<void>((resolve, reject) =>
        sock.send(payload, 9999, peerText, (e: Error | null) => (e ? reject(e) : resolve()))
      );
      const n = await readUntil(
        tun,
        buf,
        (m) => m === VNET_HDR_LEN + 28 + 300 && buf[VNET_HDR_LEN + 9] === 17,
      );
      assert.equal(n, VNET_HDR_LEN + 28 + 300, "the datagram, 10 bytes of vnet header in front");
      assert.equal(buf[1], VIRTIO_NET_HDR_GSO_NONE);
      assert.deepEqual(buf.subarray(VNET_HDR_LEN + 12, VNET_HDR_LEN + 16), local);
      // With TUN_F_CSUM the kernel may leave the UDP checksum partial; the Segmenter completes it.
      const seg = new Segmenter();
      assert.equal(seg.begin(buf, 0, n), 1);
      const out = new Uint8Array(n);
      assert.equal(seg.segment(0, out, 0), n - VNET_HDR_LEN);
      assert.ok(checksumsValid(out.subarray(0, n - VNET_HDR_LEN)), `flags ${buf[0]}: checksums complete`);
      assert.deepEqual(out.subarray(28, 328), payload);
      // writeAt refuses a range outside its buffer rather than write memory beyond it.
      assert.equal(tun.writeAt(buf, buf.length - 5, 10), -22);
    } finally {
      sock.close();
      tun.close();
    }
  },
);

Deno.test({
  name: "TCP through the TUN: the kernel hands over TSO super-packets and takes a coalesced one",
  ignore,
}, async () => {
  const { tun, local, peer, peerText } = offloadTun(1500);
  const port = 20000 + (Deno.pid % 20000);
  const buf = pinned(MAX_PACKET + VNET_HDR_SIZE);
  let conn: Deno.TcpConn | null = null;
  try {
    assert.equal(tun.offload, true);
    const connecting = Deno.connect({ hostname: peerText, port });
    // The SYN.
    const isTcpFromLocal = (flagsMask: number) => (n: number) =>
      n >= VNET_HDR_LEN + 40 && buf[VNET_HDR_LEN + 9] === 6 && (buf[VNET_HDR_LEN + 33]! & flagsMask) !== 0 &&
      buf[VNET_HDR_LEN + 22] === (port >>> 8) && buf[VNET_HDR_LEN + 23] === (port & 255);
    const n0 = await readUntil(tun, buf, isTcpFromLocal(0x02));
    assert.ok(n0 > 0, "the SYN comes out of the TUN");
    const syn = new DataView(buf.buffer, buf.byteOffset + VNET_HDR_LEN);
    const sport = syn.getUint16(20);
    const clientIsn = syn.getUint32(24);
    // Answer with a SYN-ACK: MSS 1460 and window scaling (shift 7), so the window never holds the sender back.
    const serverIsn = 0x10000000;
    const out = pinned(4096);
    const synAck = writeTcp4(out, VNET_HDR_LEN, {
      src: peer,
      dst: local,
      sport: port,
      dport: sport,
      seq: serverIsn,
      ack: clientIsn + 1,
      flags: 0x12,
      id: 1,
      options: [2, 4, 0x05, 0xb4, 1, 3, 3, 7],
    });
    assert.equal(tun.writeAt(out, 0, VNET_HDR_LEN + synAck), VNET_HDR_LEN + synAck);
    conn = await connecting;

    // The client writes 256 KiB; at least one read must be a TSO super-packet longer than the MTU.
    const data = new Uint8Array(256 * 1024).map((_, i) => (i * 7) >>> 3);
    const writing = (async () => {
      let off = 0;
      while (off < data.length) off += await conn!.write(data.subarray(off));
    })().catch(() => {});
    const seg = new Segmenter();
    const segBuf = new Uint8Array(MAX_PACKET);
    let superPackets = 0, biggest = 0, gsoSize = 0;
    const got = await readUntil(tun, buf, (n) => {
      if (!isTcpFromLocal(0x10)(n) || buf[1]! !== VIRTIO_NET_HDR_GSO_TCPV4) return false;
      superPackets++;
      biggest = Math.max(biggest, n - VNET_HDR_LEN);
      gsoSize = buf[4]! | (buf[5]! << 8);
      // Every segment it stands for is a valid TCP segment of at most the MTU.
      const count = seg.begin(buf, 0, n);
      assert.ok(count > 1, `a super-packet of ${n - VNET_HDR_LEN} bytes yields ${count} segments`);
      assert.equal(buf[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM);
      const firstSeq = new DataView(buf.buffer, buf.byteOffset + VNET_HDR_LEN).getUint32(24);
      let expectSeq = firstSeq;
      for (let i = 0; i < count; i++) {
        const m = seg.segment(i, segBuf, 0);
        assert.ok(m > 40 && m <= 1500, `segment ${i}: ${m} bytes`);
        assert.ok(checksumsValid(segBuf.subarray(0, m)), `segment ${i} checksums`);
        const sv = new DataView(segBuf.buffer, 0, m);
        assert.equal(sv.getUint32(24), expectSeq >>> 0);
        const dataOff = (segBuf[32]! >>> 4) * 4;
        const from = (sv.getUint32(24) - clientIsn - 1) >>> 0;
        assert.deepEqual(segBuf.subarray(20 + dataOff, m), data.subarray(from, from + m - 20 - dataOff));
        expectSeq += m - 20 - dataOff;
      }
      return n - VNET_HDR_LEN > 1500;
    });
    assert.ok(got > 0, `a TSO read longer than the MTU (saw ${superPackets}, biggest ${biggest})`);
    assert.equal(gsoSize, 1460, "gso_size is the MSS");

    // The other way: 20 consecutive segments from the peer, coalesced into one GSO write.
    const SLOT = 2048;
    const slots = pinned(SLOT * 20);
    const coalescer = new Coalescer();
    const reply = new Uint8Array(20 * 1000).map((_, i) => (i * 5 + 3) & 255);
    for (let i = 0; i < 20; i++) {
      const off = i * SLOT + 16;
      const len = writeTcp4(slots, off, {
        src: peer,
        dst: local,
        sport: port,
        dport: sport,
        seq: serverIsn + 1 + i * 1000,
        ack: clientIsn + 1,
        flags: i === 19 ? 0x18 : 0x10,
        id: 2 + i,
        payload: reply.subarray(i * 1000, (i + 1) * 1000),
      });
      assert.ok(coalescer.add(slots, off, len));
    }
    assert.equal(coalescer.flush(), 1, "one super-packet");
    assert.equal(coalescer.outSegments(0), 20);
    const ob = coalescer.outBuf(0), oo = coalescer.outOff(0), ol = coalescer.outLen(0);
    assert.equal(ob[oo + 1], VIRTIO_NET_HDR_GSO_TCPV4);
    assert.equal(tun.writeAt(ob, oo, ol), ol, "the kernel accepts the GSO write");
    const received = new Uint8Array(reply.length);
    let have = 0;
    const end = Date.now() + 3000;
    const rbuf = new Uint8Array(65536);
    while (have < reply.length && Date.now() < end) {
      const r = await Promise.race([conn.read(rbuf), sleep(200).then(() => undefined)]);
      if (r === null) break;
      if (r === undefined) continue;
      received.set(rbuf.subarray(0, Math.min(r, reply.length - have)), have);
      have += r;
    }
    assert.equal(have, reply.length, "the socket receives every byte of the coalesced packet");
    assert.deepEqual(received, reply);
    conn.close();
    conn = null;
    await writing;
  } finally {
    try {
      conn?.close();
    } catch { /* already closed */ }
    tun.close();
  }
});
