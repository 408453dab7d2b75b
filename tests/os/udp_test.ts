import assert from "node:assert/strict";
import { getSockOptInt, SO_MARK, SOL_SOCKET, SOL_UDP, SysError, UDP_GRO } from "../../ffi/libc.ts";
import { RecvBatch, SendBatch, UdpBind, UdpSocket } from "../../ffi/udp.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { isRoot } from "./_helpers.ts";

const ignore = !isRoot;
const LOOP4 = new Uint8Array([127, 0, 0, 1]);
const LOOP6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** Receives until `want` messages arrived on `socket` (bounded), checking each with `check`. */
function receive(
  batch: RecvBatch,
  socket: UdpSocket,
  want: number,
  check: (i: number) => void,
): number {
  const set = new PollSet(1);
  set.add(socket.fd, POLLIN);
  let got = 0;
  for (let round = 0; round < 100 && got < want; round++) {
    set.poll(20);
    const n = batch.recv(socket);
    for (let i = 0; i < n; i++) check(i);
    got += n;
  }
  return got;
}

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
  { name: "offloads are off unless asked for; asked for, both sockets get them, rebind too", ignore },
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
      const moved = offload.rebind(0);
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

Deno.test({ name: "rebind moves to a new port and keeps the old one until it succeeds", ignore }, () => {
  const a = UdpBind.open(0);
  const blocker = UdpBind.open(0);
  try {
    assert.equal(a.rebind(a.port), a);
    assert.throws(() => a.rebind(blocker.port), SysError);
    assert.equal(a.v4!.port, a.port, "a failed rebind leaves the sockets open");
    const b = a.rebind(0);
    try {
      assert.notEqual(b, a);
      assert.equal(a.v4!.fd, -1);
    } finally {
      b.close();
    }
  } finally {
    a.close();
    blocker.close();
  }
});

Deno.test(
  { name: "sendmmsg and recvmmsg batches on loopback decode sources of both families", ignore },
  () => {
    const server = UdpBind.open(0);
    const client = UdpBind.open(0);
    const send = new SendBatch(16, 2048);
    const recv = new RecvBatch(8, 2048); // Smaller than the batch: two receive calls are needed.
    try {
      for (let i = 0; i < 16; i++) {
        const len = 10 + i * 50;
        send.packets[i]!.fill(i, 0, len);
        // Families alternate in runs: 4 4 6 6 4 4 6 6…, so send() switches sockets.
        const family = (i >> 1) % 2 === 0 ? 4 : 6;
        send.set(i, len, family, family === 4 ? LOOP4 : LOOP6, server.port);
      }
      assert.equal(send.send(client, 16), 16);
      const seen = new Set<number>();
      for (const socket of [server.v4!, server.v6!]) {
        const got = receive(recv, socket, 8, (i) => {
          const tag = recv.packets[i]![0]!;
          assert.equal(recv.length(i), 10 + tag * 50);
          assert.ok(recv.packets[i]!.subarray(0, recv.length(i)).every((b) => b === tag));
          assert.equal(recv.truncated(i), false);
          assert.equal(recv.family(i), socket.family);
          assert.equal(recv.port(i), client.port);
          assert.deepEqual(recv.address(i), socket.family === 4 ? LOOP4 : LOOP6);
          seen.add(tag);
        });
        assert.equal(got, 8, `IPv${socket.family} messages`);
      }
      assert.equal(seen.size, 16);
      // Nothing more is waiting: recv returns 0 without blocking.
      assert.equal(recv.recv(server.v4!), 0);
    } finally {
      server.close();
      client.close();
    }
  },
);

Deno.test(
  { name: "an oversized datagram is reported truncated; unreachable sends are skipped", ignore },
  () => {
    const server = UdpBind.open(0);
    const client = UdpBind.open(0);
    try {
      const big = new Uint8Array(3000);
      assert.equal(client.v4!.sendTo(big, big.length, LOOP4, server.port), 3000);
      const recv = new RecvBatch(2, 1000);
      assert.equal(receive(recv, server.v4!, 1, (i) => assert.ok(recv.truncated(i))), 1);
      const send = new SendBatch(2, 64);
      send.set(0, 8, 4, new Uint8Array([0, 0, 0, 0]), 0); // Port 0: refused by the kernel (EINVAL).
      send.set(1, 8, 4, LOOP4, server.port);
      assert.equal(send.send(client, 2), 1);
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
