import assert from "node:assert/strict";
import { getSockOptInt, SO_MARK, SOL_SOCKET, SOL_UDP, SysError, UDP_GRO } from "../../ffi/libc.ts";
import { GroRecvBatch, GsoSendBatch, UdpBind, UdpSocket } from "../../ffi/udp.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { isRoot } from "./_helpers.ts";

const ignore = !isRoot;
const LOOP4 = new Uint8Array([127, 0, 0, 1]);
const LOOP6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** What {@link receive} saw: datagrams, the messages they came in, and the recv calls that returned any. */
interface Received {
  datagrams: number;
  messages: number;
  calls: number;
}

/**
 * Receives until `want` datagrams arrived on `socket` (bounded), checking each with `check` (its index in the
 * batch, then where it is in `batch.data`), and that no call returned more messages than the batch holds.
 */
function receive(
  batch: GroRecvBatch,
  socket: UdpSocket,
  want: number,
  check: (i: number, data: Uint8Array) => void,
): Received {
  const set = new PollSet(1);
  set.add(socket.fd, POLLIN);
  const out: Received = { datagrams: 0, messages: 0, calls: 0 };
  for (let round = 0; round < 100 && out.datagrams < want; round++) {
    set.poll(20);
    const n = batch.recv(socket);
    if (n === 0) continue;
    assert.ok(batch.messages >= 1 && batch.messages <= batch.maxMessages, `${batch.messages} messages`);
    for (let i = 0; i < n; i++) {
      check(i, batch.data.subarray(batch.offset(i), batch.offset(i) + batch.length(i)));
    }
    out.datagrams += n;
    out.messages += batch.messages;
    out.calls++;
  }
  return out;
}

/** Bind options of the two ways the batches are tested: offloads off (the default), and GSO plus GRO on. */
const MODES = [
  { name: "offloads off", offloads: {}, on: false },
  { name: "GSO and GRO on", offloads: { gso: true, gro: true }, on: true },
] as const;

Deno.test({ name: "port 0 gives one random port on both families", ignore }, () => {
  const bind = UdpBind.open(0);
  try {
    assert.ok(bind.port > 0);
    assert.equal(bind.v4?.port, bind.port);
    assert.equal(bind.v6?.port, bind.port);
  } finally {
    bind.close();
  }
});

Deno.test({ name: "a port in use is refused with a message naming it", ignore }, () => {
  const first = UdpBind.open(0);
  try {
    assert.throws(
      () => UdpBind.open(first.port),
      (e: unknown) =>
        e instanceof SysError && e.code === "EADDRINUSE" &&
        e.message.includes(`UDP port ${first.port} is already in use`),
    );
  } finally {
    first.close();
  }
});

Deno.test({ name: "SO_MARK is set and cleared on both sockets", ignore }, () => {
  const bind = UdpBind.open(0, 0xca6c);
  try {
    assert.equal(getSockOptInt(bind.v4!.fd, SOL_SOCKET, SO_MARK, "SO_MARK"), 0xca6c);
    assert.equal(getSockOptInt(bind.v6!.fd, SOL_SOCKET, SO_MARK, "SO_MARK"), 0xca6c);
    bind.setMark(0);
    assert.equal(getSockOptInt(bind.v4!.fd, SOL_SOCKET, SO_MARK, "SO_MARK"), 0);
    bind.setMark(0xffffffff);
    assert.equal(getSockOptInt(bind.v6!.fd, SOL_SOCKET, SO_MARK, "SO_MARK") >>> 0, 0xffffffff);
  } finally {
    bind.close();
  }
});

Deno.test(
  {
    name: "offloads are off unless asked for; asked for, both sockets get them, and a new port's pair too",
    ignore,
  },
  () => {
    const plain = UdpBind.open(0);
    const offload = UdpBind.open(0, 0, { gso: true, gro: true });
    try {
      assert.deepEqual([plain.v4!.gso, plain.v4!.gro, plain.v6!.gso, plain.v6!.gro], [
        false,
        false,
        false,
        false,
      ]);
      // Both exist on this kernel (UDP_SEGMENT since Linux 4.18, UDP_GRO since 5.0).
      assert.deepEqual([offload.v4!.gso, offload.v4!.gro, offload.v6!.gso, offload.v6!.gro], [
        true,
        true,
        true,
        true,
      ]);
      assert.equal(getSockOptInt(offload.v4!.fd, SOL_UDP, UDP_GRO, "UDP_GRO"), 1);
      // A listen-port change binds a new pair with the offloads the old one asked for (cmd/daemon.ts).
      const moved = UdpBind.open(0, 0, offload.offloads);
      try {
        assert.deepEqual([moved.v4!.gso, moved.v6!.gro], [true, true]);
        moved.v4!.disableGso();
        assert.equal(moved.v4!.gso, false);
      } finally {
        moved.close();
      }
    } finally {
      plain.close();
      offload.close();
    }
  },
);

for (const mode of MODES) {
  Deno.test(
    {
      name: `${mode.name}: batches on loopback, both families, two receives per socket, sources decoded`,
      ignore,
    },
    () => {
      const server = UdpBind.open(0, 0, mode.offloads);
      const client = UdpBind.open(0, 0, mode.offloads);
      const send = new GsoSendBatch(16, 16 * 2048);
      // Two message slots for the eight datagrams (four GSO pairs) queued on each socket: at least two calls.
      const recv = new GroRecvBatch(2, 2048);
      // Datagram `tag` is `lengthOf(tag)` bytes of `tag`. Families alternate in runs of two, 4 4 6 6 4 4 6 6…,
      // so send() switches sockets; the two of a run have the same length and destination, so they make one
      // GSO message (the batch groups them whether or not the socket has GSO).
      const lengthOf = (tag: number) => 10 + (tag >> 1) * 100;
      try {
        assert.deepEqual([client.v4!.gso, client.v6!.gso, server.v4!.gro, server.v6!.gro], [
          mode.on,
          mode.on,
          mode.on,
          mode.on,
        ]);
        for (let i = 0; i < 16; i++) {
          const len = lengthOf(i);
          assert.ok(send.room(len));
          send.data.fill(i, send.cursor, send.cursor + len);
          const family = (i >> 1) % 2 === 0 ? 4 : 6;
          send.push(len, family, family === 4 ? LOOP4 : LOOP6, server.port);
        }
        assert.equal(send.datagrams, 16);
        assert.equal(send.messages, 8);
        assert.equal(send.send(client), 16);
        const seen = new Set<number>();
        for (const socket of [server.v4!, server.v6!]) {
          const got = receive(recv, socket, 8, (i, data) => {
            const tag = data[0]!;
            assert.equal(data.length, lengthOf(tag));
            assert.ok(data.every((b) => b === tag), `datagram ${tag}: every byte is its tag`);
            assert.equal(recv.truncated(i), false);
            assert.equal(recv.family(i), socket.family);
            assert.equal(recv.port(i), client.port);
            assert.deepEqual(recv.address(i), socket.family === 4 ? LOOP4 : LOOP6);
            assert.ok(!seen.has(tag), `datagram ${tag} arrived once`);
            seen.add(tag);
          });
          assert.equal(got.datagrams, 8, `IPv${socket.family} datagrams`);
          // With GRO, each GSO pair stays one message on loopback; without, each datagram is its own.
          assert.equal(got.messages, mode.on ? 4 : 8, `IPv${socket.family} messages`);
          assert.ok(got.calls >= 2, `IPv${socket.family}: ${got.calls} receive calls`);
        }
        assert.equal(seen.size, 16);
        // Nothing more is waiting: recv returns 0 without blocking.
        assert.equal(recv.recv(server.v4!), 0);
        assert.equal(recv.recv(server.v6!), 0);
        assert.equal(recv.messages, 0);
      } finally {
        server.close();
        client.close();
      }
    },
  );

  Deno.test(
    {
      name: `${mode.name}: an oversized datagram is reported truncated; unreachable sends are skipped`,
      ignore,
    },
    () => {
      const server = UdpBind.open(0, 0, mode.offloads);
      const client = UdpBind.open(0, 0, mode.offloads);
      try {
        const big = new Uint8Array(3000).fill(7);
        assert.equal(client.v4!.sendTo(big, big.length, LOOP4, server.port), 3000);
        const recv = new GroRecvBatch(2, 1000);
        const cut = receive(recv, server.v4!, 1, (i, data) => {
          assert.ok(recv.truncated(i));
          assert.equal(data.length, 1000, "the slot's worth");
          assert.ok(data.every((b) => b === 7));
        });
        assert.equal(cut.datagrams, 1);
        const send = new GsoSendBatch(2, 64);
        send.push(8, 4, new Uint8Array([0, 0, 0, 0]), 0); // Port 0: refused by the kernel (EINVAL).
        send.push(8, 4, LOOP4, server.port);
        assert.equal(send.messages, 2);
        assert.equal(send.send(client), 1);
        const after = receive(recv, server.v4!, 1, (i, data) => {
          assert.equal(data.length, 8);
          assert.equal(recv.truncated(i), false);
          assert.equal(recv.port(i), client.port);
        });
        assert.equal(after.datagrams, 1, "the reachable one arrived");
        assert.equal(client.v4!.gso, mode.on, "a refused destination does not turn GSO off");
      } finally {
        server.close();
        client.close();
      }
    },
  );
}

Deno.test(
  {
    name: "GRO: a coalesced message longer than the slot has only its cut datagram reported truncated",
    ignore,
  },
  () => {
    const server = UdpBind.open(0, 0, { gro: true });
    const client = UdpBind.open(0, 0, { gso: true });
    try {
      const send = new GsoSendBatch(1, 2048);
      for (let tag = 1; tag <= 3; tag++) {
        send.data.fill(tag, send.cursor, send.cursor + 600);
        send.push(600, 4, LOOP4, server.port);
      }
      assert.equal(send.messages, 1);
      assert.equal(send.send(client), 3);
      // 1800 bytes in one message, a 1000-byte slot: 600 whole, 400 of the second, none of the third.
      const recv = new GroRecvBatch(2, 1000);
      const pieces: [number, number, boolean][] = [];
      receive(recv, server.v4!, 2, (i, data) => {
        assert.ok(data.every((b) => b === data[0]));
        pieces.push([data[0]!, data.length, recv.truncated(i)]);
      });
      assert.deepEqual(pieces, [[1, 600, false], [2, 400, true]]);
      assert.equal(recv.messages, 1);
      assert.equal(recv.recv(server.v4!), 0, "the third datagram went with the cut");
    } finally {
      server.close();
      client.close();
    }
  },
);

Deno.test({ name: "sendTo reports errors as negated errno", ignore }, () => {
  const s = UdpSocket.bind(4, 0);
  try {
    const r = s.sendTo(new Uint8Array(8), 8, new Uint8Array([0, 0, 0, 0]), 0);
    assert.ok(r < 0);
    assert.equal(s.recvFrom(new Uint8Array(8)), -1);
  } finally {
    s.close();
  }
});
