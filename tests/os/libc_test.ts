import assert from "node:assert/strict";
import {
  decodeSockAddr,
  encodeSockAddr,
  errnoName,
  ifIndexToName,
  ifNameToIndex,
  ifreq,
  sockAddrFamily,
  sockAddrPort,
  SysError,
} from "../../ffi/libc.ts";

// Struct encoders and errors: no privilege needed.

Deno.test("sockaddr_in round trip: family little-endian, port big-endian", () => {
  const buf = new Uint8Array(32);
  assert.equal(encodeSockAddr(buf, 4, 4, new Uint8Array([192, 0, 2, 1]), 51820), 16);
  assert.deepEqual([...buf.subarray(4, 12)], [2, 0, 0xca, 0x6c, 192, 0, 2, 1]);
  assert.equal(sockAddrFamily(buf, 4), 4);
  assert.equal(sockAddrPort(buf, 4), 51820);
  assert.deepEqual(decodeSockAddr(buf, 4), { family: 4, addr: new Uint8Array([192, 0, 2, 1]), port: 51820 });
});

Deno.test("sockaddr_in6 round trip: address at offset 8, scope id at 24", () => {
  const buf = new Uint8Array(28);
  const addr = new Uint8Array(16).map((_, i) => i + 1);
  assert.equal(encodeSockAddr(buf, 0, 6, addr, 443, 3), 28);
  assert.deepEqual([...buf.subarray(0, 4)], [10, 0, 1, 187]);
  assert.deepEqual(buf.subarray(8, 24), addr);
  assert.equal(buf[24], 3);
  assert.deepEqual(decodeSockAddr(buf, 0), { family: 6, addr, port: 443 });
  assert.equal(decodeSockAddr(new Uint8Array(16), 0), null);
  assert.throws(() => encodeSockAddr(buf, 0, 6, new Uint8Array(4), 1), RangeError);
});

Deno.test("ifreq holds the name and rejects names of 16 bytes or more", () => {
  const r = ifreq("wg0");
  assert.equal(r.length, 40);
  assert.deepEqual([...r.subarray(0, 4)], [0x77, 0x67, 0x30, 0]);
  assert.throws(() => ifreq("a-name-too-long!"), RangeError);
  assert.throws(() => ifreq(""), RangeError);
});

Deno.test("SysError names the call, the errno and what to do", () => {
  const e = new SysError("ioctl(TUNSETIFF wg0)", 16, "interface name in use");
  assert.equal(e.message, "ioctl(TUNSETIFF wg0) failed: EBUSY: interface name in use");
  assert.equal(e.code, "EBUSY");
  assert.equal(new SysError("bind", 98).message, "bind failed: EADDRINUSE: address already in use");
  assert.equal(errnoName(4242), "errno 4242");
});

Deno.test("if_nametoindex and if_indextoname agree on lo", () => {
  const index = ifNameToIndex("lo");
  assert.ok(index > 0);
  assert.equal(ifIndexToName(index), "lo");
  assert.equal(ifNameToIndex("no-such-if0"), 0);
  assert.equal(ifIndexToName(0x7fffffff), null);
});
