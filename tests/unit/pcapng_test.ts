/**
 * The pcapng encoder (lib/pcapng.ts) byte for byte against the format's layout (draft-ietf-opsawg-pcapng,
 * sections 4.1-4.6), read back by its own reader and by the scanner fed in pieces, and, where tcpdump is
 * installed, by libpcap itself (interfaces declared between packets, as a capture adds peers).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  beginEnhancedPacket,
  BLOCK_EPB,
  BLOCK_IDB,
  BLOCK_ISB,
  BLOCK_SHB,
  endEnhancedPacket,
  epbLength,
  INBOUND,
  interfaceDescription,
  interfaceStatistics,
  ISB_IFRECV,
  ISB_OSDROP,
  LINKTYPE_LINUX_SLL2,
  optionInt64,
  OUTBOUND,
  PcapngScanner,
  readBlocks,
  readEnhancedPacket,
  readInterfaceDescription,
  readOptions,
  sectionHeader,
  SNAPLEN,
} from "../../lib/pcapng.ts";
import {
  PACKET_HOST,
  PACKET_OUTGOING,
  SLL2_HEADER_LEN,
  udpHeadersLength,
  writeSll2Header,
  writeUdpHeaders,
} from "../../lib/capture.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!.map((x) => parseInt(x, 16)));

/** An EPB for `data` on `iface`, built as the capture hook builds one. */
function epb(iface: number, micros: number, data: Uint8Array, direction: number): Uint8Array {
  const b = new Uint8Array(epbLength(data.length) + 8).fill(0xee); // stale bytes must not leak into padding
  const at = beginEnhancedPacket(b, 4, iface, micros, data.length);
  assert.equal(at, 4 + 28);
  b.set(data, at);
  const end = endEnhancedPacket(b, 4, data.length, direction);
  assert.equal(end - 4, epbLength(data.length));
  return b.subarray(4, end);
}

Deno.test("pcapng: a Section Header Block as section 4.1 lays it out (little endian, v1.0, length -1)", () => {
  assert.equal(
    hex(sectionHeader("x")),
    hex(unhex(`
      0a0d0d0a 28000000
      4d3c2b1a 0100 0000 ffffffff ffffffff
      0400 0100 78000000
      00000000
      28000000`)),
  );
});

Deno.test("pcapng: an Interface Description Block (section 4.2): LINKTYPE_LINUX_SLL2, snaplen, if_name, if_description, if_tsresol", () => {
  assert.equal(
    hex(interfaceDescription("wg0", "d")),
    hex(unhex(`
      01000000 30000000
      1401 0000 ffff0000
      0200 0300 77673000
      0300 0100 64000000
      0900 0100 06000000
      00000000
      30000000`)),
  );
  assert.equal(LINKTYPE_LINUX_SLL2, 276);
  assert.equal(SNAPLEN, 65535);
});

Deno.test("pcapng: an Enhanced Packet Block (section 4.3): interface, timestamp halves, lengths, padding, epb_flags", () => {
  assert.equal(
    hex(epb(2, 0x1_0000_0002, Uint8Array.of(0x45, 0, 0, 5, 0xaa), INBOUND)),
    hex(unhex(`
      06000000 34000000
      02000000 01000000 02000000
      05000000 05000000
      450000 05 aa000000
      0200 0400 01000000
      00000000
      34000000`)),
  );
  // A length that needs no padding, outbound.
  const four = epb(0, 1, Uint8Array.of(1, 2, 3, 4), OUTBOUND);
  assert.equal(four.length, epbLength(4));
  assert.equal(hex(four.subarray(28, 32)), "01020304");
  assert.equal(hex(four.subarray(32, 40)), "0200040002000000");
});

Deno.test("pcapng: an Interface Statistics Block (section 4.6): isb_starttime/endtime as halves, counts as 64-bit integers", () => {
  const b = interfaceStatistics(0, {
    startMicros: 0x2_0000_0001,
    endMicros: 0x3_0000_0004,
    received: 7,
    dropped: 2 ** 40 + 5,
  });
  assert.equal(
    hex(b),
    hex(unhex(`
      05000000 4c000000
      00000000 03000000 04000000
      0200 0800 02000000 01000000
      0300 0800 03000000 04000000
      0400 0800 07000000 00000000
      0700 0800 05000000 00010000
      00000000
      4c000000`)),
  );
  const [blk] = readBlocks(b);
  const opts = readOptions(blk!.body, 12);
  assert.equal(optionInt64(opts.get(ISB_IFRECV)![0]!), 7);
  assert.equal(optionInt64(opts.get(ISB_OSDROP)![0]!), 2 ** 40 + 5);
});

/** `ip` behind an SLL2 header for interface 9, `type`, and a key beginning 01 02 … 06. */
function cooked(ip: Uint8Array, type: number): Uint8Array {
  const b = new Uint8Array(SLL2_HEADER_LEN + ip.length);
  b.set(ip, SLL2_HEADER_LEN);
  writeSll2Header(b, 0, 9, type, Uint8Array.from({ length: 32 }, (_, i) => i + 1));
  return b;
}

/** A stream as a capture writes it: header, one interface, a packet, a second interface, packets, statistics. */
function sampleStream(): { bytes: Uint8Array; packets: Uint8Array[] } {
  const ping = cooked(
    unhex("4500001c0001000040017cdc0a0000010a000002" + "0800f7fe00010000"),
    PACKET_OUTGOING,
  ); // ICMP echo request 10.0.0.1 > 10.0.0.2, id 1 seq 0 (checksums valid)
  const reply = cooked(unhex("4500001c0001000040017cdc0a0000020a000001" + "0000fffe00010000"), PACKET_HOST);
  const parts = [
    sectionHeader("typetun test"),
    interfaceDescription("wg0", "no peer"),
    interfaceDescription("AAAA", "peer AAAA"),
    epb(1, 1_700_000_000_000_000, ping, OUTBOUND),
    interfaceDescription("BBBB", "peer BBBB"), // declared after a packet: libpcap must take it
    epb(2, 1_700_000_000_000_500, reply, INBOUND),
    interfaceStatistics(0, { startMicros: 1, endMicros: 2, received: 5, dropped: 3 }),
  ];
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, packets: [ping, reply] };
}

Deno.test("pcapng: readBlocks and readEnhancedPacket give back what was written", () => {
  const { bytes, packets } = sampleStream();
  const blocks = readBlocks(bytes);
  assert.deepEqual(blocks.map((b) => b.type), [
    BLOCK_SHB,
    BLOCK_IDB,
    BLOCK_IDB,
    BLOCK_EPB,
    BLOCK_IDB,
    BLOCK_EPB,
    BLOCK_ISB,
  ]);
  const idb = readInterfaceDescription(blocks[2]!.body);
  assert.deepEqual(idb, { linkType: 276, snaplen: 65535, name: "AAAA", description: "peer AAAA" });
  const p = readEnhancedPacket(blocks[5]!.body);
  assert.equal(p.iface, 2);
  assert.equal(p.micros, 1_700_000_000_000_500);
  assert.equal(p.direction, INBOUND);
  assert.deepEqual(p.data, packets[1]);
  assert.equal(p.originalLength, packets[1]!.length);
  assert.throws(() => readBlocks(bytes.subarray(0, bytes.length - 4)), /length|stray/);
});

Deno.test("pcapng: the scanner counts packets and reads the drop count from a stream cut anywhere", () => {
  const { bytes } = sampleStream();
  for (const size of [1, 3, 7, 8, 13, 64, bytes.length]) {
    const s = new PcapngScanner();
    for (let p = 0; p < bytes.length; p += size) s.push(bytes.subarray(p, p + size));
    assert.equal(s.packets, 2, `pieces of ${size}`);
    assert.equal(s.dropped, 3, `pieces of ${size}`);
    assert.ok(s.complete);
  }
  const s = new PcapngScanner();
  s.push(bytes.subarray(0, 50));
  assert.equal(s.complete, false);
  assert.equal(s.dropped, null);
  assert.throws(
    () => new PcapngScanner().push(new TextEncoder().encode("error: no such peer\n")),
    /not a pcapng/,
  );
});

const tcpdump = spawnSync("sh", ["-c", "command -v tcpdump"]).status === 0;

Deno.test({
  name: "pcapng: libpcap (tcpdump -r) reads the stream, interfaces declared between packets included",
  ignore: !tcpdump,
  fn: () => {
    const dir = mkdtempSync(join(tmpdir(), "pcapng-"));
    try {
      const file = join(dir, "t.pcapng");
      writeFileSync(file, sampleStream().bytes);
      const r = spawnSync("tcpdump", ["-n", "-e", "-r", file], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 2, r.stdout);
      // -e: the direction and the link-layer address, the first 6 bytes of the peer's key.
      assert.match(
        lines[0]!,
        /Out .*01:02:03:04:05:06.*10\.0\.0\.1 > 10\.0\.0\.2: ICMP echo request, id 1, seq 0, length 8/,
      );
      assert.match(
        lines[1]!,
        /In .*01:02:03:04:05:06.*10\.0\.0\.2 > 10\.0\.0\.1: ICMP echo reply, id 1, seq 0, length 8/,
      );
      assert.match(r.stderr, /link-type LINUX_SLL2/);
      // From a pipe, as `typetun capture wg0 | tcpdump -r -` reads it.
      const piped = spawnSync("sh", ["-c", `cat ${file} | tcpdump -n -e -r -`], { encoding: "utf8" });
      assert.equal(piped.stdout, r.stdout, piped.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

/** The one's complement sum of `b` as 16-bit big-endian words (RFC 1071, naive). */
function naive(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

Deno.test("capture: synthesized IPv4/UDP headers have valid checksums and the datagram's addresses and ports", () => {
  const payload = Uint8Array.from({ length: 33 }, (_, i) => i * 7);
  const b = new Uint8Array(100);
  const h = udpHeadersLength(4);
  b.set(payload, h);
  assert.equal(
    writeUdpHeaders(b, 0, Uint8Array.of(192, 0, 2, 1), 51820, Uint8Array.of(198, 51, 100, 7), 1234, 33),
    h,
  );
  assert.equal(hex(b.subarray(0, 4)), "4500" + (20 + 8 + 33).toString(16).padStart(4, "0"));
  assert.equal(b[9], 17);
  assert.equal(naive(b.subarray(0, 20)), 0xffff, "IPv4 header checksum");
  assert.equal(hex(b.subarray(20, 26)), "ca6c04d20029");
  // UDP: pseudo-header (addresses, protocol, length) + header + data sums to 0xffff.
  const pseudo = new Uint8Array(12);
  pseudo.set(b.subarray(12, 20));
  pseudo[9] = 17;
  pseudo[11] = 41;
  const all = new Uint8Array(12 + 41 + 1);
  all.set(pseudo);
  all.set(b.subarray(20, 61), 12);
  assert.equal(naive(all), 0xffff, "UDP checksum");
});

Deno.test("capture: synthesized IPv6/UDP headers have payload length, next header 17 and a valid UDP checksum", () => {
  const src = unhex("20010db8000000000000000000000001"), dst = unhex("20010db8000000000000000000000002");
  const b = new Uint8Array(200);
  const h = udpHeadersLength(6);
  b.set(Uint8Array.from({ length: 100 }, (_, i) => 255 - i), h);
  assert.equal(writeUdpHeaders(b, 0, src, 1, dst, 2, 100), h);
  assert.equal(hex(b.subarray(0, 8)), "60000000006c1140");
  assert.deepEqual(b.subarray(8, 24), src);
  assert.deepEqual(b.subarray(24, 40), dst);
  const all = new Uint8Array(40 + 108);
  all.set(src);
  all.set(dst, 16);
  all[35] = 108;
  all[39] = 17;
  all.set(b.subarray(40, 148), 40);
  assert.equal(naive(all), 0xffff, "UDP checksum");
  assert.notEqual(b[46]! | b[47]!, 0, "IPv6 UDP checksum is never 0");
});
