/**
 * UDP segmentation offload on a real TUN (root, Linux ≥ 6.2): the TUN takes TUN_F_USO4/USO6; a UDP socket
 * sending with UDP_SEGMENT through it makes the kernel hand over one UDP super-packet, which the Segmenter
 * splits into the datagrams sent; and a Coalescer's merged UDP packet written to it reaches a local socket as
 * the datagrams it was made of.
 */
import assert from "node:assert/strict";
import { release } from "node:os";
import { addAddress, MAX_PACKET, openTun, setMtu, setUp, type Tun, VNET_HDR_SIZE } from "../../ffi/tun.ts";
import { pinned } from "../../ffi/runtime.ts";
import { GroRecvBatch, GsoSendBatch, UdpBind } from "../../ffi/udp.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { Coalescer } from "../../lib/gro.ts";
import { Segmenter, VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR_LEN } from "../../lib/gso.ts";
import { csumFold, csumPartial, ipSendCheck, pseudoHeaderSum4 } from "../../lib/checksum.ts";
import { checksum, isRoot, uniqueName } from "./_helpers.ts";

const [major, minor] = release().split(".").map(Number) as [number, number];
const hasUso = major > 6 || (major === 6 && minor >= 2);
const ignore = !isRoot;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function usoTun(): { tun: Tun; octet: number } {
  const tun = openTun(uniqueName("u"), { vnetHdr: true });
  const octet = 100 + (Deno.pid % 100);
  try {
    setMtu(tun.name, 1500);
    addAddress(tun.name, 4, new Uint8Array([10, 205, octet, 1]), 24);
    setUp(tun.name, true);
  } catch (e) {
    tun.close();
    throw e;
  }
  return { tun, octet };
}

Deno.test({ name: `the TUN takes USO on Linux ≥ 6.2 (this is ${release()})`, ignore }, () => {
  const { tun } = usoTun();
  try {
    assert.equal(tun.offload, true);
    assert.equal(tun.uso, hasUso);
    const plain = openTun(uniqueName("u"), { vnetHdr: true, uso: false });
    assert.ok(plain.offload && !plain.uso, "not asked for, not on");
    plain.close();
  } finally {
    tun.close();
  }
});

Deno.test({
  name: "USO through a real TUN: a UDP_SEGMENT send is read as one packet; a merged one is delivered",
  ignore: ignore || !hasUso,
}, async () => {
  const { tun, octet } = usoTun();
  const local = new Uint8Array([10, 205, octet, 1]);
  const peer = new Uint8Array([10, 205, octet, 2]);
  const bind = UdpBind.open(0, 0, { gso: true });
  try {
    assert.ok(bind.v4!.gso);
    // Read direction: 3 × 1000 + 400 bytes to the peer in one GSO message.
    const send = new GsoSendBatch(4, 65536);
    const sizes = [1000, 1000, 1000, 400];
    sizes.forEach((len, k) => {
      send.data.fill(k + 1, send.cursor, send.cursor + len);
      send.push(len, 4, peer, 4242);
    });
    assert.equal(send.messages, 1);
    assert.equal(send.send(bind), 4);
    const buf = pinned(MAX_PACKET + VNET_HDR_SIZE);
    let n = 0;
    for (let t = 0; t < 500 && n === 0; t++) {
      const r = tun.readAt(buf, 0, buf.length);
      // Skip what else the kernel sends (router solicitations, IGMP): the UDP to port 4242 only.
      if (
        r > 0 && buf[VNET_HDR_LEN + 9] === 17 &&
        ((buf[VNET_HDR_LEN + 22]! << 8) | buf[VNET_HDR_LEN + 23]!) === 4242
      ) n = r;
      else if (r === 0) await sleep(2);
    }
    assert.ok(n > 0, "the datagrams come out of the TUN");
    assert.equal(buf[1], VIRTIO_NET_HDR_GSO_UDP_L4, "as one USO super-packet");
    assert.equal(n, VNET_HDR_LEN + 28 + 3400);
    const seg = new Segmenter();
    assert.equal(seg.begin(buf, 0, n), 4);
    const out = new Uint8Array(2000);
    sizes.forEach((len, k) => {
      const m = seg.segment(k, out, 0);
      assert.equal(m, 28 + len);
      assert.equal(checksum(out.subarray(0, 20)), 0, "IP header checksum");
      const ph = pseudoHeaderSum4(out, 0, 17, m - 20);
      assert.equal(csumFold(csumPartial(out, 20, m - 20, ph)), 0, `datagram ${k}: UDP checksum`);
      assert.ok(out.subarray(28, m).every((b) => b === k + 1), `datagram ${k}: its bytes`);
    });

    // Write direction: 5 datagrams from the peer to our socket, merged into one USO write.
    const c = new Coalescer();
    c.coalesceUdp = true;
    const slots = pinned(2048 * 5);
    for (let k = 0; k < 5; k++) {
      const off = k * 2048 + 16, len = 28 + (k === 4 ? 300 : 1200);
      const p = slots.subarray(off, off + len);
      const v = new DataView(p.buffer, p.byteOffset, len);
      p[0] = 0x45;
      v.setUint16(2, len);
      v.setUint16(4, 100 + k);
      p[6] = 0x40;
      p[8] = 64;
      p[9] = 17;
      p.set(peer, 12);
      p.set(local, 16);
      ipSendCheck(p, 0, 20);
      v.setUint16(20, 4242);
      v.setUint16(22, bind.port);
      v.setUint16(24, len - 20);
      p.fill(0x40 + k, 28);
      const ck = csumFold(csumPartial(p, 20, len - 20, pseudoHeaderSum4(p, 0, 17, len - 20))) || 0xffff;
      v.setUint16(26, ck);
      assert.ok(c.add(slots, off, len));
    }
    assert.equal(c.flush(), 1, "merged into one write");
    assert.equal(c.outSegments(0), 5);
    assert.equal(tun.writeAt(c.outBuf(0), c.outOff(0), c.outLen(0)), c.outLen(0), "the TUN takes it");
    const recv = new GroRecvBatch(8, 65536);
    const set = new PollSet(1);
    set.add(bind.v4!.fd, POLLIN);
    const got: number[][] = [];
    for (let t = 0; t < 100 && got.length < 5; t++) {
      set.poll(20);
      const r = recv.recv(bind.v4!);
      for (let i = 0; i < r; i++) {
        const d = recv.data.subarray(recv.offset(i), recv.offset(i) + recv.length(i));
        got.push([d.length, d[0]!, recv.port(i)]);
      }
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4].map((k) => [k === 4 ? 300 : 1200, 0x40 + k, 4242]));
  } finally {
    bind.close();
    tun.close();
  }
});
