/**
 * Smoke test of the runtime adapter under Bun: `bun run tests/os/bun_smoke.ts` (as root for the TUN part).
 * Prints one line per check and "bun smoke ok" at the end; exits 1 on the first failure.
 * Run by bun_test.ts; uses only node: APIs so it also runs under Deno.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { nonblockingCalls, pinned, runtimeName } from "../../ffi/runtime.ts";
import { SysError } from "../../ffi/libc.ts";
import { getMtu, isUp, openTun, setMtu, setUp } from "../../ffi/tun.ts";
import { GroRecvBatch, GsoSendBatch, UdpBind, type UdpSocket } from "../../ffi/udp.ts";
import { POLLIN, PollSet, Waker } from "../../ffi/poll.ts";

console.log(`runtime ${runtimeName}, nonblocking calls: ${nonblockingCalls}`);

if (process.getuid?.() === 0) {
  const tun = openTun(`ttbun${process.pid % 100000}`);
  try {
    setMtu(tun.name, 1380);
    setUp(tun.name, true);
    assert.equal(getMtu(tun.name), 1380);
    assert.equal(isUp(tun.name), true);
    assert.equal(tun.readAt(pinned(2048), 0, 2048) >= 0, true);
    assert.throws(() => openTun(tun.name), (e: unknown) => e instanceof SysError && e.code === "EBUSY");
    console.log(`tun ${tun.name}: mtu, up, read, EBUSY ok`);
  } finally {
    tun.close();
  }
}

// UDP echo over loopback, both families, through sendmmsg/recvmmsg: with the offloads off, and with UDP GSO
// and GRO on (the two datagrams of each family then travel as one message, whose UDP_GRO cmsg recv reads).
const loop4 = new Uint8Array([127, 0, 0, 1]);
const loop6 = new Uint8Array(16);
loop6[15] = 1;
for (const on of [false, true]) {
  const offloads = on ? { gso: true, gro: true } : {};
  const server = UdpBind.open(0, 0, offloads);
  const client = UdpBind.open(0, 0, offloads);
  try {
    assert.equal(server.v4!.gro && client.v6!.gso, on);
    const send = new GsoSendBatch(4, 4 * 1500);
    const recv = new GroRecvBatch(4, 1500);
    for (let i = 0; i < 4; i++) {
      send.data.fill(i + 1, send.cursor, send.cursor + 100);
      send.push(100, i < 2 ? 4 : 6, i < 2 ? loop4 : loop6, server.port);
    }
    assert.equal(send.messages, 2);
    assert.equal(send.send(client), 4);
    /** Checks datagram i of `recv`: 100 bytes of 1..4 from `from`'s port, on `s`'s family; returns its tag. */
    const checked = (i: number, s: UdpSocket, from: UdpBind): number => {
      assert.equal(recv.length(i), 100);
      assert.equal(recv.truncated(i), false);
      assert.equal(recv.port(i), from.port);
      assert.equal(recv.family(i), s.family);
      assert.deepEqual(recv.address(i), s.family === 4 ? loop4 : loop6);
      const tag = recv.data[recv.offset(i)]!;
      assert.ok(tag >= 1 && tag <= 4);
      assert.ok(recv.data.subarray(recv.offset(i), recv.offset(i) + 100).every((b) => b === tag));
      return tag;
    };
    const set = new PollSet(2);
    set.add(server.v4!.fd, POLLIN);
    set.add(server.v6!.fd, POLLIN);
    let got = 0;
    let messages = 0;
    for (let round = 0; round < 100 && got < 4; round++) {
      set.poll(20);
      for (const s of [server.v4!, server.v6!]) {
        const n = recv.recv(s);
        messages += recv.messages;
        for (let i = 0; i < n; i++) {
          checked(i, s, client);
          // Echo it back from the server: copied into the send batch, to the source it came from.
          const len = recv.length(i);
          send.data.set(recv.data.subarray(recv.offset(i), recv.offset(i) + len), send.cursor);
          send.push(len, recv.family(i) as 4 | 6, recv.address(i), recv.port(i));
        }
        if (n > 0) assert.equal(send.send(server), n);
        got += n;
      }
    }
    assert.equal(got, 4);
    assert.equal(messages, on ? 2 : 4);
    const tags = new Set<number>();
    let echoMessages = 0;
    const cset = new PollSet(2);
    cset.add(client.v4!.fd, POLLIN);
    cset.add(client.v6!.fd, POLLIN);
    for (let round = 0; round < 100 && tags.size < 4; round++) {
      cset.poll(20);
      for (const s of [client.v4!, client.v6!]) {
        const n = recv.recv(s);
        echoMessages += recv.messages;
        for (let i = 0; i < n; i++) {
          const tag = checked(i, s, server);
          assert.equal(s.family, tag <= 2 ? 4 : 6);
          assert.ok(!tags.has(tag), `echo ${tag} once`);
          tags.add(tag);
        }
      }
    }
    assert.equal(tags.size, 4);
    assert.equal(echoMessages, on ? 2 : 4);
    console.log(`udp echo on port ${server.port}, offloads ${on ? "on" : "off"}: ok`);
  } finally {
    server.close();
    client.close();
  }
}

// The asynchronous poll lets timers run while it waits.
const waker = new Waker();
try {
  const set = new PollSet(1);
  set.add(waker.fd, POLLIN);
  let fired = false;
  setTimeout(() => {
    fired = true;
    waker.wake();
  }, 30);
  const n = await set.pollAsync(3000);
  assert.equal(n, 1);
  assert.equal(fired, true);
  console.log("async poll with a timer: ok");
} finally {
  waker.close();
}

console.log("bun smoke ok");
