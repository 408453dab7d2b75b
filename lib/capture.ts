/**
 * What packet capture needs besides the file format (lib/pcapng.ts): the bounded queue between the data plane
 * and a capture's reader, the link-layer header every captured packet gets (which says its direction and
 * peer), and the IP and UDP headers an encrypted datagram is given to be captured.
 *
 * The data plane must never wait for a reader (issue 16: "a slow reader loses packets, which are counted, and
 * the tunnel loses nothing"). So the capture hook copies each packet, already encoded as a pcapng block, into a
 * {@link CaptureQueue} of fixed size and returns at once; the socket writer drains it asynchronously, one chunk
 * at a time. When the queue is full the packet is not copied and counted as dropped, as the kernel's ring
 * buffer drops for a slow tcpdump (packet(7), PACKET_RX_RING; tp_drops).
 * @module
 */
import { encapsulate, overheadFor, UDP4_OVERHEAD, UDP6_OVERHEAD } from "./udp_tunnel.ts";

/**
 * A bounded queue of byte records kept in `chunkCount` preallocated chunks of `chunkBytes` each, used as a
 * ring: records are appended to the chunk being filled; the reader takes chunks oldest first (full ones, then
 * the one being filled, which then stops taking records), several at a time if it likes, and releases them in
 * the same order once written. No record spans two chunks, and nothing is allocated per record.
 */
export class CaptureQueue {
  readonly chunkBytes: number;
  readonly #chunks: Uint8Array[];
  readonly #used: Int32Array;
  /** The chunk records go to. */
  #fill = 0;
  /** The oldest chunk not yet released (taken or not). */
  #read = 0;
  /** How many chunks from #read on are taken and not released. */
  #taken = 0;
  /** Bytes committed and not yet taken. */
  #pending = 0;
  /** Records appended. */
  records = 0;
  /** Records refused for want of room. */
  dropped = 0;

  constructor(chunkCount: number, chunkBytes: number) {
    if (chunkCount < 2) throw new Error("a CaptureQueue needs at least two chunks");
    this.chunkBytes = chunkBytes;
    this.#chunks = Array.from({ length: chunkCount }, () => new Uint8Array(chunkBytes));
    this.#used = new Int32Array(chunkCount);
  }

  /** The buffer that the offset {@link reserve} returned refers to. */
  get buffer(): Uint8Array {
    return this.#chunks[this.#fill]!;
  }

  /**
   * Room for a record of `len` bytes.
   * @returns where to write it in {@link buffer}, then call {@link commit}; -1 when the queue is full (the
   * record counts as dropped)
   */
  reserve(len: number): number {
    const used = this.#used[this.#fill]!;
    if (used + len <= this.chunkBytes) return used;
    const next = (this.#fill + 1) % this.#chunks.length;
    // The chunks after the one being filled are empty up to the oldest one holding data: when that is the
    // next, every chunk holds data (waiting, or being written).
    if (next === this.#read || len > this.chunkBytes) {
      this.dropped++;
      return -1;
    }
    this.#fill = next;
    return 0;
  }

  /** The record of `len` bytes written at the place {@link reserve} gave is in. */
  commit(len: number): void {
    this.#used[this.#fill]! += len;
    this.#pending += len;
    this.records++;
  }

  /** Bytes waiting to be taken. */
  get pending(): number {
    return this.#pending;
  }

  /** Chunks taken and not yet released. */
  get taken(): number {
    return this.#taken;
  }

  /**
   * The oldest bytes not yet taken, or null if there are none (or only the chunk being filled, when every
   * other chunk is taken). They stay untouched until released.
   */
  take(): Uint8Array | null {
    const n = this.#chunks.length, at = (this.#read + this.#taken) % n;
    const used = this.#used[at]!;
    if (used === 0 || this.#taken === n) return null;
    if (at === this.#fill) {
      // The chunk being filled is taken as it is, and records go on in the next one, which must be free.
      const next = (at + 1) % n;
      if (next === this.#read) return null;
      this.#fill = next;
    }
    this.#taken++;
    this.#pending -= used;
    return this.#chunks[at]!.subarray(0, used);
  }

  /** The oldest bytes {@link take} gave are written: their chunk takes records again. */
  release(): void {
    if (this.#taken === 0) return;
    this.#taken--;
    this.#used[this.#read] = 0;
    this.#read = (this.#read + 1) % this.#chunks.length;
  }
}

/** The length of a LINKTYPE_LINUX_SLL2 header. */
export const SLL2_HEADER_LEN = 20;
/** sll_pkttype values (linux/if_packet.h): to this host, and sent by it. tcpdump prints "In" and "Out". */
export const PACKET_HOST = 0;
export const PACKET_OUTGOING = 4;
/** ARPHRD_NONE (linux/if_arp.h): a TUN interface's hardware type, no link-layer header. */
const ARPHRD_NONE = 0xfffe;
/**
 * How many bytes of the peer's public key go into the link-layer address. SLL2 has room for 8, but tcpdump
 * (print-sll.c) prints an address only when it has 6 bytes, as an Ethernet address; 48 bits tell peers apart.
 */
export const SLL2_ADDR_LEN = 6;

/**
 * Writes a LINKTYPE_LINUX_SLL2 header (tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html) at `b[at]` for an IP
 * packet whose first byte is `b[at + SLL2_HEADER_LEN]`: protocol (the EtherType of its IP version), interface
 * index, ARPHRD_NONE, `packetType` ({@link PACKET_HOST} or {@link PACKET_OUTGOING}) and as link-layer address
 * the first {@link SLL2_ADDR_LEN} bytes of `peerKey` (none when it is empty: a datagram of no known peer).
 */
export function writeSll2Header(
  b: Uint8Array,
  at: number,
  ifindex: number,
  packetType: number,
  peerKey: Uint8Array,
) {
  const v6 = b[at + SLL2_HEADER_LEN]! >>> 4 === 6;
  b[at] = v6 ? 0x86 : 0x08; // ETH_P_IPV6 0x86dd, ETH_P_IP 0x0800
  b[at + 1] = v6 ? 0xdd : 0x00;
  b[at + 2] = 0;
  b[at + 3] = 0;
  b[at + 4] = ifindex >>> 24;
  b[at + 5] = ifindex >>> 16;
  b[at + 6] = ifindex >>> 8;
  b[at + 7] = ifindex;
  b[at + 8] = ARPHRD_NONE >>> 8;
  b[at + 9] = ARPHRD_NONE & 0xff;
  b[at + 10] = packetType;
  const n = peerKey.length < SLL2_ADDR_LEN ? peerKey.length : SLL2_ADDR_LEN;
  b[at + 11] = n;
  for (let i = 0; i < 8; i++) b[at + 12 + i] = i < n ? peerKey[i]! : 0;
}

/** The IP and UDP headers {@link writeUdpHeaders} writes before a datagram of that family. */
export function udpHeadersLength(family: 4 | 6): number {
  return family === 4 ? UDP4_OVERHEAD : UDP6_OVERHEAD;
}

/**
 * Writes at `b[at]` an IPv4 (RFC 791) or IPv6 (RFC 8200) header and a UDP header (RFC 768) for a datagram of
 * `len` bytes that follows them, from `src`:`srcPort` to `dst`:`dstPort` (4- or 16-byte addresses, both of the
 * family). The encrypted datagrams of the data plane have no headers (the socket hands over the payload); a
 * capture gives them these so that it stays one link type (LINKTYPE_RAW, see lib/pcapng.ts) and tcpdump shows
 * them as the UDP they were. The UDP checksum is computed over the datagram at `b[at + headers]`, so call this
 * after the datagram is copied there. The headers are multihop's ({@link encapsulate}): TTL/hop limit 64; the
 * IPv4 identification 0 with DF, as Linux sends UDP.
 * @returns the headers' length
 */
export function writeUdpHeaders(
  b: Uint8Array,
  at: number,
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
  len: number,
): number {
  const hdr = overheadFor(src);
  encapsulate(b, at + hdr, len, src, srcPort, dst, dstPort, 0, true);
  return hdr;
}
