import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  Fragment,
  IcmpKind,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  KEY_WORDS,
  parseTuple,
  TCP_ACK,
  TCP_SYN,
  Tuple,
  writeKey,
} from "../../lib/tuple.ts";
import { echo, icmpError, ipPacket, tcp, udp } from "./_packets.ts";

function parse(p: Uint8Array, t = new Tuple()): Tuple | null {
  // At an offset inside a bigger buffer, as the device hands packets over.
  const buf = new Uint8Array(p.length + 32);
  buf.set(p, 16);
  return parseTuple(t, buf, 16, p.length) ? t : null;
}

Deno.test("tuple: IPv4 TCP and UDP give protocol, addresses, ports and TCP flags", () => {
  const t = parse(tcp("10.0.0.1", 40000, "10.0.0.2", 22, { flags: TCP_SYN | TCP_ACK }))!;
  assertEquals([t.family, t.proto, t.src[0], t.dst[0], t.srcPort, t.dstPort], [
    4,
    IPPROTO_TCP,
    0x0a000001,
    0x0a000002,
    40000,
    22,
  ]);
  assertEquals([t.tcpFlags, t.fragment, t.icmp], [TCP_SYN | TCP_ACK, Fragment.None, IcmpKind.None]);
  const u = parse(udp("192.168.1.1", 5353, "192.168.1.2", 53))!;
  assertEquals([u.proto, u.srcPort, u.dstPort, u.tcpFlags], [IPPROTO_UDP, 5353, 53, 0]);
});

Deno.test("tuple: IPv6 TCP, through a hop-by-hop extension header", () => {
  const t = parse(tcp("fd00::1", 1234, "fd00::2", 443))!;
  assertEquals([t.family, t.proto, t.srcPort, t.dstPort], [6, IPPROTO_TCP, 1234, 443]);
  assertEquals([...t.src], [0xfd000000, 0, 0, 1]);
  // Insert an 8-byte hop-by-hop header in front of the TCP header.
  const p = tcp("fd00::1", 1234, "fd00::2", 443);
  const q = new Uint8Array(p.length + 8);
  q.set(p.subarray(0, 40));
  q[6] = 0; // next header: hop-by-hop
  q[5] = p[5]! + 8;
  q[40] = IPPROTO_TCP;
  q.set(p.subarray(40), 48);
  const h = parse(q)!;
  assertEquals([h.proto, h.srcPort, h.dstPort], [IPPROTO_TCP, 1234, 443]);
});

Deno.test("tuple: ICMP echo has its identifier as both ports, so request and reply are one connection", () => {
  for (const [a, b] of [["10.0.0.1", "10.0.0.2"], ["fd00::1", "fd00::2"]]) {
    const req = parse(echo(a!, b!, 777))!;
    assertEquals([req.proto, req.icmp, req.srcPort, req.dstPort], [IPPROTO_ICMP, IcmpKind.Echo, 777, 777]);
    const rep = parse(echo(b!, a!, 777, true), new Tuple())!;
    const k1 = new Uint32Array(KEY_WORDS), k2 = new Uint32Array(KEY_WORDS);
    writeKey(req, true, 3, k1); // sent by us
    writeKey(rep, false, 3, k2); // the reply, received
    assertEquals([...k1], [...k2]);
  }
});

Deno.test("tuple: an ICMP error carries the connection of the packet it quotes (IPv4 and IPv6)", () => {
  for (
    const [us, them, router] of [["10.0.0.1", "10.0.0.2", "10.0.0.9"], ["fd00::1", "fd00::2", "fd00::9"]]
  ) {
    const sent = udp(us!, 5000, them!, 9999, { payload: 100 });
    const t = parse(icmpError(router!, us!, sent))!;
    assertEquals(t.icmp, IcmpKind.Error);
    const inner = t.inner!;
    assertEquals([inner.proto, inner.srcPort, inner.dstPort, inner.family], [
      IPPROTO_UDP,
      5000,
      9999,
      t.family,
    ]);
    const sentKey = new Uint32Array(KEY_WORDS), quotedKey = new Uint32Array(KEY_WORDS);
    writeKey(parse(sent)!, true, 1, sentKey);
    writeKey(inner, true, 1, quotedKey);
    assertEquals([...quotedKey], [...sentKey]);
  }
});

Deno.test("tuple: fragments — the first has ports, later ones have none (IPv4 and IPv6)", () => {
  for (const [a, b] of [["10.0.0.1", "10.0.0.2"], ["fd00::1", "fd00::2"]]) {
    const first = parse(udp(a!, 1000, b!, 2000, { moreFragments: true, fragId: 42, payload: 64 }))!;
    assertEquals([first.fragment, first.fragId, first.srcPort, first.dstPort], [
      Fragment.First,
      42,
      1000,
      2000,
    ]);
    const later = parse(ipPacket(a!, b!, IPPROTO_UDP, new Uint8Array(64), { fragOffset: 9, fragId: 42 }))!;
    assertEquals([later.fragment, later.fragId, later.proto, later.srcPort, later.dstPort], [
      Fragment.Later,
      42,
      IPPROTO_UDP,
      0,
      0,
    ]);
  }
  // An IPv6 atomic fragment (offset 0, no more) is a whole datagram.
  const atomic = parse(udp("fd00::1", 1, "fd00::2", 2, { fragOffset: 0, fragId: 5 }))!;
  assertEquals([atomic.fragment, atomic.dstPort], [Fragment.None, 2]);
});

Deno.test("tuple: truncated and malformed packets are refused, never read past the end", () => {
  const good = tcp("10.0.0.1", 1, "10.0.0.2", 2);
  for (let n = 0; n < good.length; n++) assertEquals(parse(good.subarray(0, n)), null, `cut at ${n}`);
  const good6 = udp("fd00::1", 1, "fd00::2", 2);
  for (let n = 0; n < good6.length; n++) assertEquals(parse(good6.subarray(0, n)), null, `v6 cut at ${n}`);
  const badIhl = good.slice();
  badIhl[0] = 0x44; // IHL 16 bytes
  assertEquals(parse(badIhl), null);
  const v5 = good.slice();
  v5[0] = 0x55;
  assertEquals(parse(v5), null);
  // A tiny first fragment that leaves the TCP header to the next one (RFC 1858).
  const tiny = ipPacket("10.0.0.1", "10.0.0.2", IPPROTO_TCP, new Uint8Array(8), { moreFragments: true });
  assertEquals(parse(tiny), null);
  // An ICMP error quoting too little to name a connection.
  const err = icmpError("10.0.0.9", "10.0.0.1", good.subarray(0, 22));
  assertEquals(parse(err), null);
  // Random bytes never throw.
  let x = 1;
  const buf = new Uint8Array(80);
  const t = new Tuple();
  for (let i = 0; i < 20000; i++) {
    for (let j = 0; j < buf.length; j++) buf[j] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
    buf[0] = (buf[0]! & 0x0f) | (i & 1 ? 0x40 : 0x60);
    parseTuple(t, buf, 0, (x >>> 8) % 81);
  }
});

Deno.test("tuple: the IP length field bounds the packet, not the buffer", () => {
  const p = tcp("10.0.0.1", 1, "10.0.0.2", 2);
  const padded = new Uint8Array(p.length + 30);
  padded.set(p);
  const t = new Tuple();
  assertEquals(parseTuple(t, padded, 0, padded.length), true);
  // A length field shorter than the TCP header it claims to hold is malformed.
  const short = p.slice();
  short[3] = 30;
  assertEquals(parseTuple(t, short, 0, short.length), false);
});
