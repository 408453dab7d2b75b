/**
 * Smoke test of the runtime adapter under Bun: `bun run tests/os/bun_smoke.ts` (as root for the TUN part).
 * Prints one line per check and "bun smoke ok" at the end; exits 1 on the first failure.
 * Run by bun_test.ts; uses only node: APIs so it also runs under Deno.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { nonblockingCalls, runtimeName } from "../../ffi/runtime.ts";
import { SysError } from "../../ffi/libc.ts";
import { getMtu, isUp, openTun, setMtu, setUp } from "../../ffi/tun.ts";
import { RecvBatch, SendBatch, UdpBind } from "../../ffi/udp.ts";
import { POLLIN, PollSet, Waker } from "../../ffi/poll.ts";

console.log(`runtime ${runtimeName}, nonblocking calls: ${nonblockingCalls}`);

if (process.getuid?.() === 0) {
  const tun = openTun(`ttbun${process.pid % 100000}`);
  try {
    setMtu(tun.name, 1380);
    setUp(tun.name, true);
    assert.equal(getMtu(tun.name), 1380);
    assert.equal(isUp(tun.name), true);
    assert.equal(tun.read(new Uint8Array(2048)) >= 0, true);
    assert.throws(() => openTun(tun.name), (e: unknown) => e instanceof SysError && e.code === "EBUSY");
    console.log(`tun ${tun.name}: mtu, up, read, EBUSY ok`);
  } finally {
    tun.close();
  }
}

// UDP echo over loopback, both families, through sendmmsg/recvmmsg.
const server = UdpBind.open(0);
const client = UdpBind.open(0);
try {
  const send = new SendBatch(4, 1500);
  const recv = new RecvBatch(4, 1500);
  const loop4 = new Uint8Array([127, 0, 0, 1]);
  const loop6 = new Uint8Array(16);
  loop6[15] = 1;
  for (let i = 0; i < 4; i++) {
    send.packets[i]!.fill(i + 1, 0, 100);
    send.set(i, 100, i < 2 ? 4 : 6, i < 2 ? loop4 : loop6, server.port);
  }
  assert.equal(send.send(client, 4), 4);
  const set = new PollSet(2);
  set.add(server.v4!.fd, POLLIN);
  set.add(server.v6!.fd, POLLIN);
  let got = 0;
  for (let round = 0; round < 100 && got < 4; round++) {
    set.poll(20);
    for (const s of [server.v4!, server.v6!]) {
      const n = recv.recv(s);
      for (let i = 0; i < n; i++) {
        assert.equal(recv.length(i), 100);
        assert.equal(recv.port(i), client.port);
        assert.equal(recv.family(i), s.family);
        // Echo it back from the server.
        const len = recv.length(i);
        send.packets[0]!.set(recv.packets[i]!.subarray(0, len));
        send.set(0, len, recv.family(i) as 4 | 6, recv.address(i), recv.port(i));
        assert.equal(send.send(server, 1), 1);
      }
      got += n;
    }
  }
  assert.equal(got, 4);
  let echoed = 0;
  const cset = new PollSet(2);
  cset.add(client.v4!.fd, POLLIN);
  cset.add(client.v6!.fd, POLLIN);
  for (let round = 0; round < 100 && echoed < 4; round++) {
    cset.poll(20);
    echoed += recv.recv(client.v4!) + recv.recv(client.v6!);
  }
  assert.equal(echoed, 4);
  console.log(`udp echo on port ${server.port}: ok`);
} finally {
  server.close();
  client.close();
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
