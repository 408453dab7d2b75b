/**
 * The pcapng capture file format (draft-ietf-opsawg-pcapng, "PCAP Now Generic"), as much of it as
 * `typetun capture` writes and reads back: a Section Header Block, an Interface Description Block per peer
 * (its name is the peer's public key), an Enhanced Packet Block per packet (with its direction in epb_flags)
 * and an Interface Statistics Block at the end (the packets the capture lost, isb_osdrop).
 *
 * Why pcapng and not classic pcap: a classic file has one link type and nothing per packet but a timestamp and
 * the lengths, so the peer of a packet would need a second channel. pcapng names each interface and gives every
 * packet its interface and direction, and libpcap (so tcpdump, also from a pipe) reads it.
 *
 * The link type is LINKTYPE_LINUX_SLL2 (Linux cooked capture v2, what `tcpdump -i any` writes), not
 * LINKTYPE_RAW, for two reasons. libpcap insists that every interface of a file has the link type of the first
 * (sf-pcapng.c), and up to 1.10.3 (Debian 12's) it compares the first one's DLT with the others' LINKTYPE,
 * which differ for RAW (12 against 101): a second RAW interface fails with "an interface has a type 101
 * different from the type of the first interface"; SLL2's DLT and LINKTYPE are both 276. And its 20-byte
 * header carries what tcpdump can print: the direction (packet type, "In"/"Out") and a link-layer address,
 * here the first 6 bytes of the peer's public key (`tcpdump -e`). The header is written by lib/capture.ts;
 * the outer UDP datagrams are given IP and UDP headers there too, so that one link type carries both.
 *
 * Everything is written little endian (the Byte-Order Magic tells readers); the packet path writes straight into
 * the caller's buffer and allocates nothing.
 * @module
 */

/** Block types (section 11.1 of the draft). */
export const BLOCK_SHB = 0x0a0d0d0a;
export const BLOCK_IDB = 0x00000001;
export const BLOCK_ISB = 0x00000005;
export const BLOCK_EPB = 0x00000006;
/** The Byte-Order Magic of a Section Header Block: reads as 0x1A2B3C4D in the writer's byte order. */
export const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/**
 * LINKTYPE_LINUX_SLL2: each packet begins with a 20-byte "Linux cooked capture" v2 header
 * (tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html), then the IP packet.
 */
export const LINKTYPE_LINUX_SLL2 = 276;
/** Every interface's snapshot length: larger than any IP packet, so nothing is cut. */
export const SNAPLEN = 65535;

/** Option codes: common to all blocks (opt_*), then per block (section 4.2 and the blocks' sections). */
export const OPT_ENDOFOPT = 0;
export const OPT_COMMENT = 1;
export const SHB_USERAPPL = 4;
export const IF_NAME = 2;
export const IF_DESCRIPTION = 3;
export const IF_TSRESOL = 9;
export const EPB_FLAGS = 2;
export const ISB_STARTTIME = 2;
export const ISB_ENDTIME = 3;
export const ISB_IFRECV = 4;
export const ISB_OSDROP = 7;

/** epb_flags bits 0-1, the direction (section 4.3.1): inbound to and outbound from the interface. */
export const INBOUND = 1;
export const OUTBOUND = 2;

/** The fixed part of an EPB before its packet data: type, length, interface, timestamp (2), lengths (2). */
export const EPB_HEADER_LEN = 28;
/** What an EPB adds after the (padded) packet: epb_flags (4 + 4), opt_endofopt (4), the length again (4). */
const EPB_TRAILER_LEN = 16;
const TWO_32 = 4294967296;

const pad4 = (n: number) => (n + 3) & ~3;

/** Bytes of an Enhanced Packet Block holding `capLen` bytes of packet. */
export function epbLength(capLen: number): number {
  return EPB_HEADER_LEN + pad4(capLen) + EPB_TRAILER_LEN;
}

function u16(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
}

function u32(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
  b[at + 2] = v >>> 16;
  b[at + 3] = v >>> 24;
}

/** A 64-bit count or timestamp as two 32-bit halves, high first (how pcapng stores them), exact below 2^53. */
function u64halves(b: Uint8Array, at: number, v: number): void {
  const high = Math.floor(v / TWO_32);
  u32(b, at, high);
  u32(b, at + 4, v - high * TWO_32);
}

/** A 64-bit option value stored as one little-endian integer (isb_ifrecv, isb_osdrop). */
function u64le(b: Uint8Array, at: number, v: number): void {
  const high = Math.floor(v / TWO_32);
  u32(b, at, v - high * TWO_32);
  u32(b, at + 4, high);
}

/**
 * Writes the head of an Enhanced Packet Block for a packet of `capLen` bytes seen on interface `iface` at
 * `micros` (microseconds since the epoch, the default if_tsresol) at `b[at]`.
 * @returns where the packet's bytes go; {@link endEnhancedPacket} finishes the block after they are there
 */
export function beginEnhancedPacket(
  b: Uint8Array,
  at: number,
  iface: number,
  micros: number,
  capLen: number,
) {
  u32(b, at, BLOCK_EPB);
  u32(b, at + 4, epbLength(capLen));
  u32(b, at + 8, iface);
  u64halves(b, at + 12, micros);
  u32(b, at + 20, capLen); // captured length
  u32(b, at + 24, capLen); // original length: nothing is cut (SNAPLEN)
  return at + EPB_HEADER_LEN;
}

/**
 * Finishes the block {@link beginEnhancedPacket} began at `b[at]`: pads the packet to 32 bits and writes
 * epb_flags (`direction`: {@link INBOUND} or {@link OUTBOUND}) and the closing length.
 * @returns the block's end
 */
export function endEnhancedPacket(b: Uint8Array, at: number, capLen: number, direction: number): number {
  let p = at + EPB_HEADER_LEN + capLen;
  for (const e = at + EPB_HEADER_LEN + pad4(capLen); p < e; p++) b[p] = 0;
  u16(b, p, EPB_FLAGS);
  u16(b, p + 2, 4);
  u32(b, p + 4, direction);
  u32(b, p + 8, 0); // opt_endofopt
  u32(b, p + 12, epbLength(capLen));
  return p + 16;
}

/** One option of a block being built: a code and its value. */
type Option = [code: number, value: Uint8Array];

const utf8 = new TextEncoder();

function text(code: number, s: string): Option {
  return [code, utf8.encode(s)];
}

function int64(code: number, v: number): Option {
  const b = new Uint8Array(8);
  u64le(b, 0, v);
  return [code, b];
}

/** A whole block: type, length, `fixed` body, options (each padded, then opt_endofopt), length again. */
function block(type: number, fixed: Uint8Array, options: Option[]): Uint8Array {
  let len = 12 + fixed.length;
  if (options.length > 0) {
    for (const [, v] of options) len += 4 + pad4(v.length);
    len += 4;
  }
  const b = new Uint8Array(len);
  u32(b, 0, type);
  u32(b, 4, len);
  b.set(fixed, 8);
  let p = 8 + fixed.length;
  if (options.length > 0) {
    for (const [code, v] of options) {
      u16(b, p, code);
      u16(b, p + 2, v.length);
      b.set(v, p + 4);
      p += 4 + pad4(v.length);
    }
    p += 4; // opt_endofopt: four zero bytes
  }
  u32(b, p, len);
  return b;
}

/** The Section Header Block that starts a stream: version 1.0, section length unknown (-1), the writer named. */
export function sectionHeader(application: string): Uint8Array {
  const fixed = new Uint8Array(16);
  u32(fixed, 0, BYTE_ORDER_MAGIC);
  u16(fixed, 4, 1); // major version
  u16(fixed, 6, 0); // minor version
  u32(fixed, 8, 0xffffffff); // section length -1: not known while streaming
  u32(fixed, 12, 0xffffffff);
  return block(BLOCK_SHB, fixed, [text(SHB_USERAPPL, application)]);
}

/**
 * An Interface Description Block: LINKTYPE_LINUX_SLL2, {@link SNAPLEN}, a name and a description (if_name,
 * if_description); timestamps in microseconds (the default if_tsresol, written out for readers that want it).
 * Interfaces are numbered by the order of their blocks in the section, from 0.
 */
export function interfaceDescription(name: string, description: string): Uint8Array {
  const fixed = new Uint8Array(8);
  u16(fixed, 0, LINKTYPE_LINUX_SLL2);
  u32(fixed, 4, SNAPLEN);
  return block(BLOCK_IDB, fixed, [
    text(IF_NAME, name),
    text(IF_DESCRIPTION, description),
    [IF_TSRESOL, Uint8Array.of(6)],
  ]);
}

/** What an {@link interfaceStatistics} block reports. */
export interface CaptureStatistics {
  /** When the capture started and ended, microseconds since the epoch. */
  startMicros: number;
  endMicros: number;
  /** Packets the capture saw: those written and those lost. */
  received: number;
  /** Packets lost because the reader did not keep up (isb_osdrop: dropped by the capturing software). */
  dropped: number;
}

/** An Interface Statistics Block for interface `iface`, stamped at the capture's end. */
export function interfaceStatistics(iface: number, s: CaptureStatistics): Uint8Array {
  const fixed = new Uint8Array(12);
  u32(fixed, 0, iface);
  u64halves(fixed, 4, s.endMicros);
  const halves = (code: number, v: number): Option => {
    const b = new Uint8Array(8);
    u64halves(b, 0, v);
    return [code, b];
  };
  return block(BLOCK_ISB, fixed, [
    halves(ISB_STARTTIME, s.startMicros),
    halves(ISB_ENDTIME, s.endMicros),
    int64(ISB_IFRECV, s.received),
    int64(ISB_OSDROP, s.dropped),
  ]);
}

// ------------------------------------------------------------------------------------------------ reading

/** A block as read: its type and its body (what lies between the two length fields). */
export interface Block {
  type: number;
  body: Uint8Array;
}

function r32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

function r16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

/** The options of a block body from `start`: code → values, in order. */
export function readOptions(body: Uint8Array, start: number): Map<number, Uint8Array[]> {
  const out = new Map<number, Uint8Array[]>();
  for (let p = start; p + 4 <= body.length;) {
    const code = r16(body, p), len = r16(body, p + 2);
    if (code === OPT_ENDOFOPT) break;
    if (p + 4 + len > body.length) throw new Error(`pcapng: option ${code} runs past its block`);
    const list = out.get(code) ?? [];
    list.push(body.subarray(p + 4, p + 4 + len));
    out.set(code, list);
    p += 4 + pad4(len);
  }
  return out;
}

/** A 64-bit option value (little endian) as a number. */
export function optionInt64(v: Uint8Array): number {
  return r32(v, 0) + r32(v, 4) * TWO_32;
}

/**
 * Reads a little-endian pcapng stream as it arrives, in chunks of any size: counts the packets (EPBs) and keeps
 * what the last Interface Statistics Block said was lost. `typetun capture` passes its stream through one, to
 * report at the end what tcpdump reports. Keeps only the blocks' heads (and whole ISBs), never the packets.
 */
export class PcapngScanner {
  /** Enhanced Packet Blocks seen. */
  packets = 0;
  /** isb_osdrop of the last Interface Statistics Block, or null if none came. */
  dropped: number | null = null;
  /** Whether the stream so far ends on a block boundary. */
  get complete(): boolean {
    return this.#have === 0 && this.#remaining === 0;
  }
  readonly #head = new Uint8Array(256);
  #have = 0;
  /** Bytes of the current block still to come after its head was taken in. */
  #remaining = 0;
  #first = true;

  /** Takes the next bytes of the stream. Throws on a stream that is not little-endian pcapng. */
  push(chunk: Uint8Array): void {
    let p = 0;
    while (p < chunk.length) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - p);
        this.#keep(chunk, p, n);
        p += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#finish();
        continue;
      }
      // A block's type and length.
      const n = Math.min(8 - this.#have, chunk.length - p);
      this.#head.set(chunk.subarray(p, p + n), this.#have);
      this.#have += n;
      p += n;
      if (this.#have < 8) break;
      const type = r32(this.#head, 0), len = r32(this.#head, 4);
      if (this.#first && type !== BLOCK_SHB) throw new Error("not a pcapng stream");
      this.#first = false;
      if (len < 12 || len % 4 !== 0) throw new Error(`pcapng: a block of type ${type} has length ${len}`);
      this.#remaining = len - 8;
    }
  }

  /** Keeps what fits of a block in the head buffer (an ISB fits whole). */
  #keep(chunk: Uint8Array, p: number, n: number): void {
    const room = Math.min(n, this.#head.length - this.#have);
    if (room > 0) this.#head.set(chunk.subarray(p, p + room), this.#have);
    this.#have += n;
  }

  #finish(): void {
    const type = r32(this.#head, 0), len = this.#have;
    if (type === BLOCK_SHB && r32(this.#head, 8) !== BYTE_ORDER_MAGIC) {
      throw new Error("pcapng: only little-endian sections are read");
    }
    if (type === BLOCK_EPB) this.packets++;
    else if (type === BLOCK_ISB && len <= this.#head.length) {
      const drop = readOptions(this.#head.subarray(8, len - 4), 12).get(ISB_OSDROP);
      if (drop) this.dropped = optionInt64(drop[0]!);
    }
    this.#have = 0;
  }
}

/** Splits a whole little-endian pcapng stream into blocks (for tests and tools; checks every length). */
export function readBlocks(bytes: Uint8Array): Block[] {
  const out: Block[] = [];
  for (let p = 0; p < bytes.length;) {
    if (p + 12 > bytes.length) throw new Error(`pcapng: ${bytes.length - p} stray bytes at the end`);
    const type = r32(bytes, p), len = r32(bytes, p + 4);
    if (len < 12 || len % 4 !== 0 || p + len > bytes.length) {
      throw new Error(`pcapng: a block of type ${type} at ${p} has length ${len}`);
    }
    if (r32(bytes, p + len - 4) !== len) {
      throw new Error(`pcapng: the block at ${p} ends with another length`);
    }
    out.push({ type, body: bytes.subarray(p + 8, p + len - 4) });
    p += len;
  }
  return out;
}

/** The fields of an Enhanced Packet Block's body. */
export interface EnhancedPacket {
  iface: number;
  micros: number;
  data: Uint8Array;
  originalLength: number;
  /** epb_flags' direction bits: {@link INBOUND}, {@link OUTBOUND}, or 0 if absent. */
  direction: number;
}

export function readEnhancedPacket(body: Uint8Array): EnhancedPacket {
  const capLen = r32(body, 12);
  const flags = readOptions(body, 20 + pad4(capLen)).get(EPB_FLAGS);
  return {
    iface: r32(body, 0),
    micros: r32(body, 4) * TWO_32 + r32(body, 8),
    data: body.subarray(20, 20 + capLen),
    originalLength: r32(body, 16),
    direction: flags ? r32(flags[0]!, 0) & 3 : 0,
  };
}

/** The fields of an Interface Description Block's body that typetun writes. */
export function readInterfaceDescription(body: Uint8Array): {
  linkType: number;
  snaplen: number;
  name: string;
  description: string;
} {
  const opts = readOptions(body, 8);
  const dec = new TextDecoder();
  return {
    linkType: r16(body, 0),
    snaplen: r32(body, 4),
    name: dec.decode(opts.get(IF_NAME)?.[0] ?? new Uint8Array(0)),
    description: dec.decode(opts.get(IF_DESCRIPTION)?.[0] ?? new Uint8Array(0)),
  };
}
