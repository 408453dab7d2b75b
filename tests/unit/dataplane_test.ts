/**
 * The data loop (cmd/dataplane.ts) run for real, without root: two Devices, each with its loop, a packet
 * device (an in-memory channel, or the TUN adapter over an in-memory stand-in for the kernel's TUN file) and
 * a datagram transport on an in-memory network.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect } from "node:net";
import process from "node:process";
import { ChannelWaker, type DatagramChannel, MemoryNetwork, PacketChannel } from "../../cmd/channel.ts";
import type { LoopClock } from "../../cmd/clock.ts";
import { DataPlane, type PacketDevice } from "../../cmd/dataplane.ts";
import { Level, Logger } from "../../cmd/log.ts";
import { TunDevice, type TunFile } from "../../cmd/tun_device.ts";
import { UapiServer } from "../../cmd/uapi_server.ts";
import { COALESCE_MAX_PACKETS } from "../../lib/gro.ts";
import { VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VNET_HDR_LEN } from "../../lib/gso.ts";
import { parseCidr } from "../../lib/ip.ts";
import { formatErrno, formatGet } from "../../lib/uapi.ts";
import { Verdict } from "../../lib/device.ts";
import {
  MESSAGE_DATA,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_RESPONSE,
} from "../../lib/messages.ts";
import { EINVAL } from "../../ffi/libc.ts";
import { FakeClock, packetAB, packetBA, pair, type Side } from "./_harness.ts";
import { ACK, PSH, tcpPacket, tsoRead, vnetFields } from "./_offload.ts";

/** The fake clock, driven as the loop drives its clock (time moves only when the test says). */
class TestClock extends FakeClock implements LoopClock {
  tick(): number {
    return this.t;
  }
  msUntil(t: number): number {
    return Math.max(0, Math.ceil(t - this.t));
  }
}

/** A logger that keeps its error lines. */
class CaptureLog extends Logger {
  readonly errors: string[] = [];
  constructor() {
    super(Level.Silent, "test");
  }
  override error(msg: string): void {
    this.errors.push(msg);
  }
}

/**
 * What the kernel's TUN file does with IFF_VNET_HDR and offloads: reads hand over what was put in (vnet header
 * and packet), writes are kept; `refuseGso` makes it refuse merged (GSO) writes with EINVAL.
 */
class MemoryTun implements TunFile {
  readonly name = "mem0";
  readonly offload = true;
  readonly reads: Uint8Array[] = [];
  readonly writes: Uint8Array[] = [];
  refuseGso = false;
  refused = 0;
  constructor(readonly vnetHdr = true) {}
  readAt(buf: Uint8Array, off: number, len: number): number {
    const r = this.reads.shift();
    if (!r) return 0;
    const n = Math.min(r.length, len);
    buf.set(r.subarray(0, n), off);
    return n;
  }
  writeAt(buf: Uint8Array, off: number, len: number): number {
    if (this.vnetHdr && this.refuseGso && buf[off + 1] !== VIRTIO_NET_HDR_GSO_NONE) {
      this.refused++;
      return -EINVAL;
    }
    this.writes.push(buf.slice(off, off + len));
    return len;
  }
}

interface Node {
  side: Side;
  waker: ChannelWaker;
  packets: PacketDevice;
  channel: PacketChannel | null;
  tun: MemoryTun | null;
  transport: DatagramChannel;
  loop: DataPlane;
  log: CaptureLog;
}

/**
 * A and B (the harness's pair: 10.0.0.1 and 10.0.0.2, endpoints 192.0.2.1:1000 and 192.0.2.2:2000), each with
 * its loop. With `tun`, a side's packet device is the TUN adapter over a MemoryTun; else an in-memory channel.
 * B also answers for 10.0.0.99, the destination of the TCP packets of _offload.ts.
 */
function world(opts: {
  tunA?: boolean;
  tunB?: boolean;
  /** The MemoryTuns have a vnet header (default true). */
  vnet?: boolean;
  sendBytesA?: number;
  perReceiveB?: number;
  maxPacket?: number;
} = {}): { a: Node; b: Node; net: MemoryNetwork; clock: TestClock } {
  const clock = new TestClock();
  const { a, b } = pair({ clock });
  a.device.apply({
    replacePeers: false,
    peers: [{
      publicKey: b.publicKey,
      remove: false,
      updateOnly: true,
      replaceAllowedIps: false,
      allowedIps: [parseCidr("10.0.0.99/32")!],
    }],
  });
  const net = new MemoryNetwork();
  const node = (side: Side, tun: boolean, sendBytes?: number, perReceive?: number): Node => {
    const waker = new ChannelWaker();
    const log = new CaptureLog();
    let packets: PacketDevice, channel: PacketChannel | null = null, file: MemoryTun | null = null;
    if (tun) {
      const f = file = new MemoryTun(opts.vnet ?? true);
      waker.watch(() => f.reads.length > 0);
      packets = new TunDevice({
        file: f,
        ready: () => f.reads.length > 0,
        ifindex: 1,
        links: null,
        mtu: 1420,
        log,
      });
    } else {
      packets = channel = new PacketChannel(waker, { maxPacket: opts.maxPacket ?? 65535 });
    }
    const transport = net.attach(side.endpoint, waker, {
      ...(sendBytes ? { sendBytes } : {}),
      ...(perReceive ? { perReceive } : {}),
    });
    const loop = new DataPlane({ device: side.device, packets, transport, clock, waker, log });
    return { side, waker, packets, channel, tun: file, transport, loop, log };
  };
  return {
    a: node(a, opts.tunA ?? false, opts.sendBytesA),
    b: node(b, opts.tunB ?? false, undefined, opts.perReceiveB),
    net,
    clock,
  };
}

/** Runs rounds of both loops until neither moves a packet (bounded). */
function settle(...nodes: Node[]): number {
  for (let r = 1; r <= 1000; r++) {
    let moved = false;
    for (const n of nodes) moved = n.loop.round() || moved;
    if (!moved && nodes.every((n) => n.transport.waiting === 0)) return r;
  }
  throw new Error("the loops did not settle");
}

/** A TUN read of one packet: a zero vnet header (no offload asked), then the packet. */
function plainRead(p: Uint8Array): Uint8Array {
  const r = new Uint8Array(VNET_HDR_LEN + p.length);
  r.set(p, VNET_HDR_LEN);
  return r;
}

const types = (batch: Uint8Array[]) => batch.map((d) => d[0]);
const flat = (batches: Uint8Array[][]) => batches.flat();

Deno.test("dataplane: two devices exchange traffic through their loops, handshake first, then data both ways", () => {
  const { a, b } = world();
  const ab = [1, 2, 3].map((n) => packetAB(n, 100));
  a.channel!.put(...ab);
  settle(a, b);
  assert.deepEqual(b.channel!.written, ab, "B's device wrote A's packets, in order");
  // The initiation left through A's send batch, as data does: the first batch A sent holds it alone.
  assert.deepEqual(types(a.transport.batches[0]!), [MESSAGE_HANDSHAKE_INITIATION]);
  assert.deepEqual(types(b.transport.batches[0]!), [MESSAGE_HANDSHAKE_RESPONSE]);
  assert.deepEqual(types(a.transport.batches[1]!), [MESSAGE_DATA, MESSAGE_DATA, MESSAGE_DATA]);

  const ba = [4, 5].map((n) => packetBA(n, 1000));
  b.channel!.put(...ba);
  const more = [6, 7, 8, 9].map((n) => packetAB(n, 1300));
  a.channel!.put(...more);
  settle(a, b);
  assert.deepEqual(a.channel!.written, ba);
  assert.deepEqual(b.channel!.written, [...ab, ...more]);
  // With a session, each packet is encrypted where it was read, in the send batch: no copy.
  assert.equal(a.transport.inPlace, 4);
  assert.equal(b.transport.inPlace, 2);
  // The staged packets and the handshake messages were copied in (one each).
  assert.equal(a.transport.copied, 1 + 3);
  assert.equal(b.transport.copied, 1);
  const va = a.side.device.verdicts, vb = b.side.device.verdicts;
  assert.equal(va[Verdict.Queued], 3);
  assert.equal(va[Verdict.Send], 4);
  assert.equal(vb[Verdict.Deliver], 7);
  assert.equal(va[Verdict.Deliver], 2);
  assert.equal(vb[Verdict.Handled], 1, "the initiation");
  assert.equal(va[Verdict.Handled], 1, "the response");
});

Deno.test("dataplane: a drop is counted under its reason, and the loop goes on", () => {
  const { a, b } = world();
  a.channel!.put(packetAB(1), tcpPacket({ src: 1, seq: 1, payload: new Uint8Array(10) }));
  // A packet to an address no peer holds.
  a.channel!.put(
    new Uint8Array([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 9, 9, 9]),
  );
  settle(a, b);
  assert.equal(a.side.device.verdicts[Verdict.DropNoRoute], 1);
  assert.equal(b.channel!.written.length, 2);
  b.channel!.put(packetBA(7));
  // Replayed: B's datagram carried twice. The second copy is dropped as a replay, and counted.
  b.side.device.sink = {
    send: (buf, off, len, to, inPlace) => {
      b.transport.send(buf, off, len, to, inPlace);
      b.transport.send(buf.slice(off, off + len), 0, len, to, false);
    },
  };
  settle(a, b);
  assert.equal(a.channel!.written.length, 1);
  assert.equal(a.side.device.verdicts[Verdict.DropReplay], 1);
});

Deno.test("dataplane: a TSO super-packet leaves as its segments, and arrives as one coalesced TUN write", () => {
  const { a, b } = world({ tunA: true, tunB: true });
  // A session first (one small packet through the TUN adapter, without offload).
  a.tun!.reads.push(plainRead(packetAB(1)));
  settle(a, b);
  assert.equal(b.tun!.writes.length, 1);
  assert.deepEqual(b.tun!.writes[0]!.subarray(VNET_HDR_LEN), packetAB(1));

  const payload = new Uint8Array(20 * 1000).map((_, i) => (i * 7) & 0xff);
  const spec = { src: 1, seq: 5000, flags: ACK | PSH, payload };
  a.tun!.reads.push(tsoRead(spec, 1000));
  const batches = a.transport.batches.length;
  settle(a, b);
  const sent = flat(a.transport.batches.slice(batches));
  assert.equal(sent.length, 20, "20 segments, 20 datagrams");
  assert.ok(sent.every((d) => d[0] === MESSAGE_DATA));
  // B merged them back: one write with a vnet header asking the kernel for TSO, carrying every byte in order.
  assert.equal(b.tun!.writes.length, 2);
  const w = b.tun!.writes[1]!;
  const h = vnetFields(w, 0);
  assert.equal(h.gsoType, VIRTIO_NET_HDR_GSO_TCPV4);
  assert.equal(h.gsoSize, 1000);
  const ip = w.subarray(VNET_HDR_LEN);
  const ihl = (ip[0]! & 15) * 4, thl = (ip[ihl + 12]! >>> 4) * 4;
  assert.deepEqual(ip.subarray(ihl + thl), payload);
  assert.equal(a.side.device.verdicts[Verdict.Queued], 1, "the first packet waited for the handshake");
  assert.equal(a.side.device.verdicts[Verdict.Send], 20);
  assert.equal(b.side.device.verdicts[Verdict.Deliver], 20 + 1);
});

Deno.test("dataplane: a TUN without a vnet header: packets read into their slots and written as they are", () => {
  const { a, b } = world({ tunA: true, tunB: true, vnet: false });
  const ab = [1, 2, 3].map((n) => packetAB(n, 300));
  a.tun!.reads.push(...ab);
  settle(a, b);
  assert.deepEqual(b.tun!.writes, ab);
  b.tun!.reads.push(packetBA(4, 1300));
  settle(a, b);
  assert.deepEqual(a.tun!.writes, [packetBA(4, 1300)]);
  assert.equal(b.transport.inPlace, 1);
});

Deno.test("dataplane: a full coalescer is written out and merging goes on", () => {
  const n = COALESCE_MAX_PACKETS + 44;
  // One receive batch holds every datagram, so the coalescer fills within one batch.
  const { a, b } = world({ tunA: true, tunB: true, perReceiveB: 1000 });
  a.tun!.reads.push(plainRead(packetAB(1)));
  settle(a, b);
  const payload = new Uint8Array(n * 100).map((_, i) => (i * 13) & 0xff);
  a.tun!.reads.push(tsoRead({ src: 1, seq: 1, payload }, 100));
  settle(a, b);
  const writes = b.tun!.writes.slice(1);
  assert.ok(b.side.device.verdicts[Verdict.Deliver]! === n + 1, "every segment delivered");
  // Merged runs, the first cut where the coalescer filled up; together every byte, in order.
  const segs = writes.map((w) => {
    const ip = w.subarray(VNET_HDR_LEN);
    const ihl = (ip[0]! & 15) * 4, thl = (ip[ihl + 12]! >>> 4) * 4;
    return ip.subarray(ihl + thl);
  });
  assert.deepEqual(new Uint8Array(segs.flatMap((s) => [...s])), payload);
  assert.ok(writes.length >= 2 && writes.length < 10, `${writes.length} writes`);
  const counts = segs.map((s) => s.length / 100);
  assert.equal(counts.reduce((x, y) => x + y), n);
  assert.ok(counts.slice(0, -1).reduce((x, y) => x + y) <= COALESCE_MAX_PACKETS);
});

Deno.test("dataplane: a TUN that refuses a coalesced write gets every later packet singly, and says so once", () => {
  const { a, b } = world({ tunA: true, tunB: true });
  b.tun!.refuseGso = true;
  a.tun!.reads.push(plainRead(packetAB(1)));
  settle(a, b);
  const burst = (seq: number) => {
    const payload = new Uint8Array(10 * 500).fill(seq & 0xff);
    a.tun!.reads.push(tsoRead({ src: 1, seq, payload }, 500));
    settle(a, b);
  };
  burst(1000);
  assert.equal(b.tun!.refused, 1, "the merged write was refused");
  assert.equal((b.packets as TunDevice).coalescing, false);
  burst(20000);
  burst(40000);
  assert.equal(b.tun!.refused, 1, "never merged again");
  const later = b.tun!.writes.slice(1);
  assert.equal(later.length, 20, "each segment of the later bursts written singly");
  assert.ok(later.every((w) => w[1] === VIRTIO_NET_HDR_GSO_NONE));
  assert.equal(b.log.errors.length, 1);
  assert.match(b.log.errors[0]!, /refused a coalesced packet \(EINVAL\); writing packets singly/);
});

Deno.test("dataplane: batch boundaries keep handshakes and data in order", () => {
  // A's send batch holds one slot of the largest packet and two 256-byte datagrams: every third datagram
  // finds no room and sends the batch first.
  const maxPacket = 1500;
  const { a, b } = world({ sendBytesA: maxPacket + 47 + 2 * 256, maxPacket });
  a.channel!.put(...[1, 2, 3].map((n) => packetAB(n, 200)));
  // The round that takes in B's response also reads more packets: they queue behind the staged ones.
  a.loop.round();
  assert.deepEqual(types(flat(a.transport.batches)), [MESSAGE_HANDSHAKE_INITIATION]);
  b.loop.round(); // B answers
  a.channel!.put(...[4, 5, 6, 7, 8, 9, 10].map((n) => packetAB(n, 200)));
  settle(a, b);
  // The ten staged packets were copied in after the response: eight filled the batch, two went in the next.
  assert.deepEqual(a.transport.batches.map((x) => x.length), [1, 8, 2]);
  // With the session, packets are encrypted in the slots the batch gives out: three to a batch.
  a.channel!.put(...[11, 12, 13, 14, 15, 16, 17].map((n) => packetAB(n, 200)));
  settle(a, b);
  assert.deepEqual(a.transport.batches.slice(3).map((x) => x.length), [3, 3, 1]);
  assert.equal(a.transport.inPlace, 7);
  const expected = Array.from({ length: 17 }, (_, i) => packetAB(i + 1, 200));
  assert.deepEqual(b.channel!.written, expected, "in the order read, across batch boundaries");
  assert.deepEqual(
    types(flat(a.transport.batches)),
    [MESSAGE_HANDSHAKE_INITIATION, ...new Array(17).fill(MESSAGE_DATA)],
  );
});

Deno.test({
  name:
    "dataplane: run() idles on its waker, serves what arrives, and stops when asked or when its device goes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { a, b } = world();
    const ra = a.loop.run(), rb = b.loop.run();
    await new Promise((r) => setTimeout(r, 20));
    const idleWaits = a.waker.asyncWaits;
    assert.ok(idleWaits >= 1 && idleWaits < 5, `idle: ${idleWaits} asynchronous waits, not a spin`);
    a.channel!.put(packetAB(1));
    for (let i = 0; i < 100 && b.channel!.written.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(b.channel!.written, [packetAB(1)]);
    const t0 = performance.now();
    a.loop.stop("test is done");
    await ra;
    assert.ok(performance.now() - t0 < 100, "a stop wakes the idle wait");
    assert.equal(a.loop.stopped, "test is done");
    b.channel!.gone = "interface mem1 was deleted";
    b.waker.wake();
    await rb;
    assert.equal(b.loop.stopped, "interface mem1 was deleted");
  },
});

Deno.test({
  name: "dataplane: UAPI requests are answered while the loop is under load",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { a, b } = world();
    a.channel!.put(packetAB(0));
    settle(a, b);
    const flood = 30_000;
    for (let i = 0; i < flood; i++) a.channel!.inbox.push(packetAB(i, 64));
    b.channel!.onWrite = () => {};
    const path = `/tmp/typetun-dataplane-${process.pid}.sock`;
    rmSync(path, { force: true });
    const server = await UapiServer.listen(path, new Logger(Level.Silent, "test"), {});
    server.serve((req) =>
      req.op === "get" ? formatGet(a.side.device.info()) + formatErrno(0) : formatErrno(0)
    );
    const ra = a.loop.run(), rb = b.loop.run();
    try {
      const replies: { left: number; text: string }[] = [];
      for (let i = 0; i < 3; i++) {
        const text = await new Promise<string>((resolve, reject) => {
          const s = connect(path);
          let t = "";
          s.setEncoding("utf8");
          s.on("data", (d: string) => {
            t += d;
            if (t.endsWith("\n\n")) {
              s.destroy();
              resolve(t);
            }
          });
          s.on("error", reject);
          s.write("get=1\n\n");
        });
        replies.push({ left: a.channel!.inbox.length, text });
      }
      for (const r of replies) {
        assert.ok(r.left > 0, "answered while packets were still waiting");
        assert.match(r.text, /tx_bytes=\d+\n[^]*errno=0\n\n$/);
      }
      const tx = replies.map((r) => Number(/tx_bytes=(\d+)/.exec(r.text)![1]));
      assert.ok(tx[2]! > tx[0]!, `traffic went on between the requests (${tx})`);
    } finally {
      a.loop.stop("done");
      b.loop.stop("done");
      await Promise.all([ra, rb]);
      server.close();
      rmSync(path, { force: true });
    }
  },
});
