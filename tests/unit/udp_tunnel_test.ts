/**
 * lib/udp_tunnel.ts: IP/UDP headers built in place in front of a payload and checked on the way back, against
 * a naive RFC 1071 checksum written here (16-bit words summed one by one).
 */
import assert from "node:assert/strict";
import { Decap, decapsulate, encapsulate, type UdpPayload } from "../../lib/udp_tunnel.ts";
import { parseAddress } from "../../lib/ip.ts";

const A4 = parseAddress("10.64.0.2")!, B4 = parseAddress("10.0.5.7")!;
const A6 = parseAddress("fd00:64::2")!, B6 = parseAddress("2001:db8::5:7")!;

/** The one's complement sum of 16-bit big-endian words, odd byte padded: RFC 1071 done the slow way. */
function naiveSum(bytes: number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function payload(n: number, seed = 7): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 31 + seed) & 0xff;
  return p;
}

/** A buffer with `data` at offset 100 (room in front for headers, as the send batch leaves it). */
function placed(data: Uint8Array): Uint8Array {
  const buf = new Uint8Array(100 + data.length + 32);
  buf.set(data, 100);
  return buf;
}

const out = (): UdpPayload => ({ offset: 0, length: 0, family: 4, srcOffset: 0, srcPort: 0 });

Deno.test("udp_tunnel: IPv4 headers, with checksums a naive RFC 1071 sum accepts", () => {
  for (const n of [0, 1, 2, 33, 148, 1420]) {
    const data = payload(n);
    const buf = placed(data);
    const start = encapsulate(buf, 100, n, A4, 51820, B4, 4242, 0x1234);
    assert.equal(start, 100 - 28);
    const pkt = Array.from(buf.subarray(start, 100 + n));
    assert.equal(pkt[0], 0x45);
    assert.equal((pkt[2]! << 8) | pkt[3]!, 28 + n, "total length");
    assert.equal((pkt[4]! << 8) | pkt[5]!, 0x1234, "identification");
    assert.equal(pkt[9], 17);
    assert.equal(naiveSum(pkt.slice(0, 20)), 0xffff, `IPv4 header checksum (${n} bytes)`);
    const udp = pkt.slice(20);
    assert.equal((udp[0]! << 8) | udp[1]!, 51820);
    assert.equal((udp[2]! << 8) | udp[3]!, 4242);
    assert.equal((udp[4]! << 8) | udp[5]!, 8 + n, "UDP length");
    const pseudo = [...A4, ...B4, 0, 17, (8 + n) >> 8, (8 + n) & 0xff];
    assert.equal(naiveSum([...pseudo, ...udp]), 0xffff, `UDP checksum (${n} bytes)`);
    assert.notEqual((udp[6]! << 8) | udp[7]!, 0, "a checksum is always sent");

    const o = out();
    assert.equal(decapsulate(buf, start, 28 + n, B4, null, 4242, o), Decap.Ok);
    assert.deepEqual([o.offset, o.length, o.family, o.srcPort], [100, n, 4, 51820]);
    assert.deepEqual(buf.subarray(o.srcOffset, o.srcOffset + 4), A4);
    assert.deepEqual(buf.subarray(o.offset, o.offset + o.length), data);
  }
});

Deno.test("udp_tunnel: IPv6 headers and checksum; decapsulated in place", () => {
  for (const n of [0, 1, 100, 1400]) {
    const data = payload(n, 3);
    const buf = placed(data);
    const start = encapsulate(buf, 100, n, A6, 1, B6, 65535, 0);
    assert.equal(start, 100 - 48);
    const pkt = Array.from(buf.subarray(start, 100 + n));
    assert.equal(pkt[0], 0x60);
    assert.equal((pkt[4]! << 8) | pkt[5]!, 8 + n, "payload length");
    assert.equal(pkt[6], 17);
    const udp = pkt.slice(40);
    const len = 8 + n;
    const pseudo = [...A6, ...B6, 0, 0, len >> 8, len & 0xff, 0, 0, 0, 17];
    assert.equal(naiveSum([...pseudo, ...udp]), 0xffff);
    const o = out();
    assert.equal(decapsulate(buf, start, 48 + n, null, B6, 65535, o), Decap.Ok);
    assert.deepEqual([o.offset, o.length, o.family, o.srcPort], [100, n, 6, 1]);
    assert.deepEqual(buf.subarray(o.srcOffset, o.srcOffset + 16), A6);
  }
});

Deno.test("udp_tunnel: padding after the IP total length (a WireGuard payload) is ignored", () => {
  const buf = placed(payload(20));
  const start = encapsulate(buf, 100, 20, A4, 5, B4, 6, 1);
  const o = out();
  // 48 bytes as WireGuard pads them to 16: 12 bytes of zeros after the packet.
  assert.equal(decapsulate(buf, start, 48 + 12, B4, null, 6, o), Decap.Ok);
  assert.equal(o.length, 20);
});

Deno.test("udp_tunnel: every bad packet is refused with its reason", () => {
  const fresh4 = () => {
    const buf = placed(payload(64));
    return { buf, start: encapsulate(buf, 100, 64, A4, 5, B4, 6, 9), len: 28 + 64 };
  };
  const fresh6 = () => {
    const buf = placed(payload(64));
    return { buf, start: encapsulate(buf, 100, 64, A6, 5, B6, 6, 0), len: 48 + 64 };
  };
  const o = out();
  const d4 = (f: { buf: Uint8Array; start: number; len: number }, port = 6) =>
    decapsulate(f.buf, f.start, f.len, B4, B6, port, o);

  // A flipped payload bit, or a flipped header bit.
  let f = fresh4();
  f.buf[100 + 10]! ^= 0x04;
  assert.equal(d4(f), Decap.BadChecksum);
  f = fresh4();
  f.buf[f.start + 8]! ^= 1; // TTL: the header checksum
  assert.equal(d4(f), Decap.BadChecksum);
  f = fresh6();
  f.buf[100 + 63]! ^= 0x80;
  assert.equal(d4(f), Decap.BadChecksum);
  // IPv4 may go without a UDP checksum (RFC 768); IPv6 may not (RFC 8200 8.1).
  f = fresh4();
  f.buf[f.start + 26] = f.buf[f.start + 27] = 0;
  assert.equal(d4(f), Decap.Ok);
  f = fresh6();
  f.buf[f.start + 46] = f.buf[f.start + 47] = 0;
  assert.equal(d4(f), Decap.BadChecksum);
  // Another port, another address, no address of the family.
  assert.equal(d4(fresh4(), 7), Decap.NotForUs);
  f = fresh4();
  assert.equal(decapsulate(f.buf, f.start, f.len, A4, null, 6, o), Decap.NotForUs);
  assert.equal(decapsulate(f.buf, f.start, f.len, null, B6, 6, o), Decap.NotForUs);
  f = fresh6();
  assert.equal(decapsulate(f.buf, f.start, f.len, B4, null, 6, o), Decap.NotForUs);
  // Not UDP (an ICMP echo to the hop's address), fragments, IPv6 extension headers.
  f = fresh4();
  f.buf[f.start + 9] = 1;
  assert.equal(d4(f), Decap.NotUdp);
  f = fresh4();
  f.buf[f.start + 6] = 0x20; // more fragments
  assert.equal(d4(f), Decap.Fragment);
  f = fresh4();
  f.buf[f.start + 7] = 0x10; // a fragment offset
  assert.equal(d4(f), Decap.Fragment);
  f = fresh6();
  f.buf[f.start + 6] = 44;
  assert.equal(d4(f), Decap.Fragment);
  f = fresh6();
  f.buf[f.start + 6] = 58; // ICMPv6
  assert.equal(d4(f), Decap.NotUdp);
  // Lengths that do not add up, versions that do not exist, short packets.
  f = fresh4();
  assert.equal(decapsulate(f.buf, f.start, f.len - 1, B4, B6, 6, o), Decap.Malformed);
  f = fresh4();
  f.buf[f.start + 25] = 200; // UDP length past the packet
  assert.equal(d4(f), Decap.Malformed);
  f = fresh4();
  f.buf[f.start + 24] = 0;
  f.buf[f.start + 25] = 4; // UDP length below its header
  assert.equal(d4(f), Decap.Malformed);
  f = fresh4();
  f.buf[f.start] = 0x44; // IHL 4
  assert.equal(d4(f), Decap.Malformed);
  f = fresh6();
  assert.equal(decapsulate(f.buf, f.start, 47, B4, B6, 6, o), Decap.Malformed);
  f = fresh6();
  f.buf[f.start + 4] = 0xff; // payload length past the packet
  assert.equal(d4(f), Decap.Malformed);
  f = fresh4();
  f.buf[f.start] = 0x55;
  assert.equal(d4(f), Decap.Malformed);
  assert.equal(decapsulate(new Uint8Array(0), 0, 0, B4, B6, 6, o), Decap.Malformed);
  assert.equal(decapsulate(new Uint8Array(10).fill(0x45), 0, 10, B4, B6, 6, o), Decap.Malformed);
});

Deno.test("udp_tunnel: mixed families and oversize payloads are refused when building", () => {
  const buf = new Uint8Array(70_000);
  assert.throws(() => encapsulate(buf, 100, 10, A4, 1, B6, 2, 0), /different families/);
  assert.throws(() => encapsulate(buf, 100, 65_535 - 20, A4, 1, B4, 2, 0), /IPv4 packet/);
  assert.throws(() => encapsulate(buf, 100, 65_535 - 7, A6, 1, B6, 2, 0), /IPv6 packet/);
});
