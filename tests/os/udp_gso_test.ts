/**
 * UDP GSO (UDP_SEGMENT) on send and UDP GRO on receive through GsoSendBatch and GroRecvBatch: over loopback of
 * both families, to receivers with and without GRO, with GSO refused by a small MTU (in a network namespace
 * the test creates and deletes) and, injected, with EIO and EAGAIN.
 */
import assert from "node:assert/strict";
import {
  check,
  cmsgLen,
  cmsgSpace,
  cString,
  EAGAIN,
  EIO,
  findCmsg,
  libc,
  O_CLOEXEC,
  setPointer,
  SOL_UDP,
  UDP_GRO,
  UDP_SEGMENT,
} from "../../ffi/libc.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { LIBC, openLibrary } from "../../ffi/runtime.ts";
import {
  GRO_MAX_SEGMENTS,
  GroRecvBatch,
  GSO_MAX_BYTES,
  GSO_MAX_SEGMENTS,
  GsoSendBatch,
  UdpBind,
  type UdpSocket,
} from "../../ffi/udp.ts";
import { ip, ipQuiet, isRoot, uniqueName } from "./_helpers.ts";

const ignore = !isRoot;
const LOOP4 = new Uint8Array([127, 0, 0, 1]);
const LOOP6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const OFFLOADS = { gso: true, gro: true } as const;

/** One datagram sent: its sequence number (in its first two bytes, the rest derived from it) and length. */
interface Sent {
  seq: number;
  len: number;
}

/** Byte j of datagram `seq`: the sequence number, then a pattern that differs between datagrams. */
function byteOf(seq: number, j: number): number {
  return j === 0 ? seq >> 8 : j === 1 ? seq & 0xff : (seq * 31 + j * 7) & 0xff;
}

/** Writes datagram `seq` of `len` bytes at the batch's cursor and pushes it. */
function put(
  batch: GsoSendBatch,
  log: Sent[],
  seq: number,
  len: number,
  family: 4 | 6,
  addr: Uint8Array,
  port: number,
): void {
  assert.ok(batch.room(len));
  const at = batch.cursor;
  for (let j = 0; j < len; j++) batch.data[at + j] = byteOf(seq, j);
  batch.push(len, family, addr, port);
  log.push({ seq, len });
}

/** What arrived: each datagram's sequence number and length, checked byte for byte and for its source. */
interface Arrived {
  datagrams: Sent[];
  /** Messages recvmmsg returned (fewer than datagrams when GRO coalesced). */
  messages: number;
}

/** Receives on `socket` until `want` datagrams arrived or a quiet half second passed (bounded). */
function receive(
  batch: GroRecvBatch,
  socket: UdpSocket,
  want: number,
  from: { port: number; addr: Uint8Array },
): Arrived {
  const set = new PollSet(1);
  set.add(socket.fd, POLLIN);
  const out: Arrived = { datagrams: [], messages: 0 };
  for (let round = 0; round < 50 && out.datagrams.length < want; round++) {
    set.poll(10);
    const n = batch.recv(socket);
    out.messages += batch.messages;
    for (let i = 0; i < n; i++) {
      const off = batch.offset(i);
      const len = batch.length(i);
      assert.equal(batch.truncated(i), false);
      assert.equal(batch.family(i), socket.family);
      assert.equal(batch.port(i), from.port);
      assert.deepEqual(batch.address(i), from.addr);
      const seq = (batch.data[off]! << 8) | batch.data[off + 1]!;
      for (let j = 0; j < len; j++) {
        if (batch.data[off + j] !== byteOf(seq, j)) assert.fail(`datagram ${seq}: byte ${j} differs`);
      }
      out.datagrams.push({ seq, len });
    }
  }
  return out;
}

for (const family of [4, 6] as const) {
  const loop = family === 4 ? LOOP4 : LOOP6;

  Deno.test(
    { name: `IPv${family}: GSO to a receiver without GRO arrives as the single datagrams`, ignore },
    () => {
      const server = UdpBind.open(0);
      const client = UdpBind.open(0, 0, OFFLOADS);
      try {
        const sock = server.socket(family)!;
        assert.equal(client.socket(family)!.gso, true, "this kernel has UDP GSO");
        assert.equal(sock.gro, false);
        const send = new GsoSendBatch(8);
        const sent: Sent[] = [];
        for (let k = 0; k < 10; k++) put(send, sent, k, 1200, family, loop, server.port);
        put(send, sent, 10, 517, family, loop, server.port); // shorter: the last segment
        assert.equal(send.messages, 1);
        assert.equal(send.datagrams, 11);
        assert.equal(send.send(client), 11);
        assert.equal(send.datagrams, 0);
        assert.equal(send.cursor, 0);
        const got = receive(new GroRecvBatch(4), sock, 11, { port: client.port, addr: loop });
        assert.deepEqual(got.datagrams, sent, "in order, with their lengths");
        assert.equal(got.messages, 11, "without GRO the kernel segments before queueing");
      } finally {
        server.close();
        client.close();
      }
    },
  );
}

Deno.test({
  name: "GSO to a GRO receiver: messages break at destination, size and limits; recv splits",
  ignore,
}, () => {
  const a = UdpBind.open(0, 0, OFFLOADS);
  const b = UdpBind.open(0, 0, OFFLOADS);
  const client = UdpBind.open(0, 0, OFFLOADS);
  try {
    assert.equal(a.v4!.gro && a.v6!.gro, true, "this kernel has UDP GRO");
    const send = new GsoSendBatch(32, 1 << 20);
    const toA4: Sent[] = [], toA6: Sent[] = [], toB4: Sent[] = [];
    let seq = 0;
    const run = (log: Sent[], count: number, len: number, family: 4 | 6, bind: UdpBind) => {
      for (let k = 0; k < count; k++) {
        put(send, log, seq++, len, family, family === 4 ? LOOP4 : LOOP6, bind.port);
      }
    };
    run(toA4, 8, 1000, 4, a);
    run(toA4, 1, 300, 4, a); // shorter: joins, and closes the message
    assert.equal(send.messages, 1);
    run(toA4, 2, 1000, 4, a); // a closed message takes no more
    assert.equal(send.messages, 2);
    run(toA4, 2, 1200, 4, a); // longer than the segment size
    assert.equal(send.messages, 3);
    run(toB4, 3, 1200, 4, b); // another port
    assert.equal(send.messages, 4);
    run(toA6, 4, 1200, 6, a); // another family
    assert.equal(send.messages, 5);
    run(toA4, 1, 1200, 4, a);
    assert.equal(send.messages, 6);
    run(toA4, GSO_MAX_SEGMENTS + 6, 100, 4, a); // the segment limit
    assert.equal(send.messages, 8);
    const perMessage = Math.floor(GSO_MAX_BYTES / 1400); // 46: the byte limit comes first
    run(toA4, perMessage + 4, 1400, 4, a);
    assert.equal(send.messages, 10);
    run(toA4, 1, 2, 4, a); // a two-byte datagram (its sequence number only)
    const total = toA4.length + toA6.length + toB4.length;
    assert.equal(send.datagrams, total);
    assert.equal(send.send(client), total);

    const recv = new GroRecvBatch(3); // fewer slots than messages: several receives
    const gotA4 = receive(recv, a.v4!, toA4.length, { port: client.port, addr: LOOP4 });
    assert.deepEqual(gotA4.datagrams, toA4);
    assert.ok(gotA4.messages < toA4.length / 10, `coalesced: ${gotA4.messages} messages`);
    const gotB4 = receive(recv, b.v4!, toB4.length, { port: client.port, addr: LOOP4 });
    assert.deepEqual(gotB4.datagrams, toB4);
    assert.equal(gotB4.messages, 1);
    const gotA6 = receive(recv, a.v6!, toA6.length, { port: client.port, addr: LOOP6 });
    assert.deepEqual(gotA6.datagrams, toA6);
    assert.equal(gotA6.messages, 1);
    assert.equal(recv.recv(a.v4!), 0, "nothing more waiting");
  } finally {
    a.close();
    b.close();
    client.close();
  }
});

Deno.test({ name: "GSO off: the same batch goes out one datagram per message", ignore }, () => {
  const server = UdpBind.open(0, 0, OFFLOADS);
  const client = UdpBind.open(0); // no offloads asked for
  try {
    assert.equal(client.v4!.gso, false);
    const send = new GsoSendBatch(4);
    const sent: Sent[] = [];
    for (let k = 0; k < 100; k++) put(send, sent, k, 600, 4, LOOP4, server.port);
    put(send, sent, 100, 20, 4, LOOP4, server.port);
    assert.equal(send.messages, 2); // still grouped: send() splits them
    assert.equal(send.send(client), 101);
    const got = receive(new GroRecvBatch(16), server.v4!, 101, { port: client.port, addr: LOOP4 });
    assert.deepEqual(got.datagrams, sent);
    assert.equal(got.messages, 101, "nothing to coalesce: the datagrams were sent one by one");
  } finally {
    server.close();
    client.close();
  }
});

Deno.test({ name: "refused messages are skipped without throwing; GSO stays on", ignore }, () => {
  const server = UdpBind.open(0);
  const client = UdpBind.open(0, 0, OFFLOADS);
  try {
    const send = new GsoSendBatch(4);
    const sent: Sent[] = [];
    const none = new Uint8Array(4);
    for (let k = 0; k < 3; k++) put(send, [], 900 + k, 100, 4, none, 0); // port 0: EINVAL for each
    for (let k = 0; k < 3; k++) put(send, sent, k, 100, 4, LOOP4, server.port);
    assert.equal(send.messages, 2);
    assert.equal(send.send(client), 3);
    assert.equal(client.v4!.gso, true);
    const got = receive(new GroRecvBatch(4), server.v4!, 3, { port: client.port, addr: LOOP4 });
    assert.deepEqual(got.datagrams, sent);
  } finally {
    server.close();
    client.close();
  }
});

/** A batch whose kernel refuses every GSO message with `errno`, counting the refusals. */
class RefusingBatch extends GsoSendBatch {
  refused = 0;
  constructor(readonly errno: number, messages: number) {
    super(messages);
  }
  protected override sendmmsg(fd: number, headers: Uint8Array, count: number): number {
    // msg_controllen (offset 40 of the first mmsghdr) is set only on GSO messages.
    if (this.errno === EAGAIN || headers[40] !== 0) {
      this.refused++;
      return -this.errno;
    }
    return super.sendmmsg(fd, headers, count);
  }
}

Deno.test({ name: "EIO (injected) turns GSO off for the socket; the datagrams still arrive", ignore }, () => {
  const server = UdpBind.open(0, 0, OFFLOADS);
  const client = UdpBind.open(0, 0, OFFLOADS);
  try {
    const send = new RefusingBatch(EIO, 8);
    const sent: Sent[] = [];
    for (let k = 0; k < 5; k++) put(send, sent, k, 700, 4, LOOP4, server.port);
    for (let k = 5; k < 9; k++) put(send, sent, k, 800, 4, LOOP4, server.port);
    for (let k = 9; k < 12; k++) put(send, sent, k, 800, 6, LOOP6, server.port);
    assert.equal(send.messages, 3);
    assert.equal(send.send(client), 12);
    assert.equal(send.refused, 2, "one refusal per socket: GSO is then off for it");
    assert.equal(client.v4!.gso, false);
    assert.equal(client.v6!.gso, false);
    const got4 = receive(new GroRecvBatch(8), server.v4!, 9, { port: client.port, addr: LOOP4 });
    assert.deepEqual(got4.datagrams, sent.slice(0, 9));
    assert.equal(got4.messages, 9);
    const got6 = receive(new GroRecvBatch(8), server.v6!, 3, { port: client.port, addr: LOOP6 });
    assert.deepEqual(got6.datagrams, sent.slice(9));
    // Off for good: the next batch is not tried as GSO.
    for (let k = 0; k < 3; k++) put(send, [], k, 700, 4, LOOP4, server.port);
    assert.equal(send.send(client), 3);
    assert.equal(send.refused, 2);
  } finally {
    server.close();
    client.close();
  }
});

Deno.test({ name: "EAGAIN (injected) drops the rest of the batch without throwing", ignore }, () => {
  const client = UdpBind.open(0, 0, OFFLOADS);
  try {
    const send = new RefusingBatch(EAGAIN, 8);
    for (let k = 0; k < 4; k++) put(send, [], k, 100, 4, LOOP4, 9);
    put(send, [], 4, 200, 4, LOOP4, 9);
    assert.equal(send.send(client), 0);
    assert.equal(send.refused, 1);
    assert.equal(send.datagrams, 0);
    assert.equal(client.v4!.gso, true);
  } finally {
    client.close();
  }
});

// --- In a network namespace whose loopback has a 1280-byte MTU -------------------------------------------

const CLONE_NEWNET = 0x40000000;
const nsLib = isRoot ? openLibrary(LIBC, { setns: { args: ["i32", "i32"], result: "i32" } }) : null;

/** Runs `f` with this thread in network namespace `ns` (sockets opened there stay there), then returns. */
function inNetns<T>(ns: string, f: () => T): T {
  const here = check(libc.symbols.open(cString("/proc/thread-self/ns/net"), O_CLOEXEC, 0), "open(own netns)");
  const there = check(libc.symbols.open(cString(`/run/netns/${ns}`), O_CLOEXEC, 0), `open(netns ${ns})`);
  try {
    check(nsLib!.symbols.setns(there, CLONE_NEWNET), `setns(${ns})`);
    try {
      return f();
    } finally {
      check(nsLib!.symbols.setns(here, CLONE_NEWNET), "setns(back)");
    }
  } finally {
    libc.symbols.close(here);
    libc.symbols.close(there);
  }
}

Deno.test(
  { name: "segments above the route MTU: GSO refused, the datagrams go out one by one", ignore },
  () => {
    const ns = uniqueName("gso");
    ip("netns", "add", ns);
    try {
      ip("-n", ns, "link", "set", "lo", "up", "mtu", "1280");
      const [server, client] = inNetns(
        ns,
        () => [UdpBind.open(0, 0, OFFLOADS), UdpBind.open(0, 0, OFFLOADS)],
      );
      try {
        for (const family of [4, 6] as const) {
          const loop = family === 4 ? LOOP4 : LOOP6;
          const send = new GsoSendBatch(8);
          const sent: Sent[] = [];
          // 1000 + 28 (or 48) bytes of headers fit in 1280: the kernel takes this one as a GSO message…
          for (let k = 0; k < 4; k++) put(send, sent, k, 1000, family, loop, server.port);
          // …and refuses this one (EMSGSIZE here, EINVAL on older kernels): 1400 + headers exceed the MTU.
          for (let k = 4; k < 8; k++) put(send, sent, k, 1400, family, loop, server.port);
          assert.equal(send.messages, 2);
          assert.equal(send.send(client), 8);
          assert.equal(client.socket(family)!.gso, true, "an MTU refusal does not turn GSO off");
          const got = receive(new GroRecvBatch(8), server.socket(family)!, 8, {
            port: client.port,
            addr: loop,
          });
          assert.deepEqual(got.datagrams, sent, `IPv${family}`);
          assert.equal(got.messages, 5, "one GSO message, then four (fragmented) datagrams sent alone");
        }
      } finally {
        server.close();
        client.close();
      }
    } finally {
      ipQuiet("netns", "del", ns);
    }
  },
);

Deno.test({ name: "GroRecvBatch without GRO and the batch limits", ignore }, () => {
  assert.throws(() => new GsoSendBatch(0), RangeError);
  assert.throws(() => new GroRecvBatch(2, 0), RangeError);
  const send = new GsoSendBatch(1, 1000);
  assert.equal(send.room(1000), true);
  assert.equal(send.room(1001), false);
  send.push(400, 4, LOOP4, 1);
  // room() cannot know where the next datagram goes: with every message slot taken, there is none.
  assert.equal(send.room(100), false);
  send.push(400, 4, LOOP4, 1); // the same destination and size still joins the message
  assert.equal(send.messages, 1);
  assert.throws(() => send.push(100, 4, LOOP4, 2), RangeError, "another destination needs a message slot");
  send.clear();
  assert.equal(send.cursor, 0);
  assert.ok(GRO_MAX_SEGMENTS >= GSO_MAX_SEGMENTS);
});

Deno.test("setPointer carries into the high half; findCmsg walks aligned control messages", () => {
  const buf = new Uint8Array(16);
  const view = new DataView(buf.buffer);
  setPointer(view, 0, 0xffff_fff0, 0x7f12, 0x20);
  assert.equal(view.getBigUint64(0, true), 0x7f12_ffff_fff0n + 0x20n);
  setPointer(view, 8, 0x1000, 0x7f12, 0x234);
  assert.equal(view.getBigUint64(8, true), 0x7f12_0000_1234n);
  assert.deepEqual([cmsgLen(2), cmsgSpace(2), cmsgSpace(4)], [18, 24, 24]);
  // Two messages: SOL_UDP/UDP_SEGMENT with a u16 (padded to 24 bytes), then SOL_UDP/UDP_GRO with an int.
  const control = new Uint8Array(64);
  const c = new DataView(control.buffer);
  c.setUint32(0, cmsgLen(2), true);
  c.setInt32(8, SOL_UDP, true);
  c.setInt32(12, UDP_SEGMENT, true);
  c.setUint32(24, cmsgLen(4), true);
  c.setInt32(32, SOL_UDP, true);
  c.setInt32(36, UDP_GRO, true);
  c.setInt32(40, 1452, true);
  const at = findCmsg(c, 0, 48, SOL_UDP, UDP_GRO);
  assert.equal(at, 40);
  assert.equal(c.getInt32(at, true), 1452);
  assert.equal(findCmsg(c, 0, 24, SOL_UDP, UDP_GRO), -1, "beyond msg_controllen");
  assert.equal(findCmsg(c, 0, 48, 0, UDP_GRO), -1);
});
